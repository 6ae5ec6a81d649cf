"""`blockd verify` against real daemons on loopback and real nftables in a namespace: it
passes on a working setup and fails, naming the target, when a service is down or answers
wrongly; every run is stored for reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import db_digest
from daemons import free_port
from dnsstub import StubUpstream
from prometheus_client.parser import text_string_to_metric_families
from test_nft import blockd_ns, netns  # noqa: F401 - the namespace fixture

from blockd.store.store import Store


def run_cli(config: Path, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BLOCKD_CONFIG": str(config), "BLOCKD_ACTOR": "tester"}
    return subprocess.run([sys.executable, "-m", "blockd", *args, "--db", str(db)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def start(config: Path, db: Path, kind: str) -> subprocess.Popen[str]:
    env = {**os.environ, "BLOCKD_CONFIG": str(config)}
    proc = subprocess.Popen([sys.executable, "-m", "blockd", "serve", kind, "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on" in line or "http://" in line, line
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)


@pytest.fixture(scope="module")
def upstream() -> Iterator[StubUpstream]:
    """Answers every name with a real address: a resolver that does not block."""
    with StubUpstream(["allofmp3.com. 300 IN A 192.0.2.1"]) as up:
        yield up


@dataclass
class Site:
    config: Path
    db: Path
    dns_port: int
    http_port: int
    procs: dict[str, subprocess.Popen[str]]


@pytest.fixture
def site(tmp_path: Path, upstream: StubUpstream) -> Iterator[Site]:
    """Both daemons running on loopback with two orders in force."""
    dns_port, http_port = free_port(), free_port()
    config = tmp_path / "blockd.toml"
    config.write_text(
        f'[dns]\nlisten = ["127.0.0.1:{dns_port}"]\n'
        f'upstream = ["127.0.0.1:{upstream.port}"]\nupstream_timeout = 0.3\n'
        f'[notice]\nlisten = ["127.0.0.1:{http_port}"]\nipv4 = "127.0.0.80"\n'
        'resolve_cnames = false\n')
    db = tmp_path / "blockd.db"
    assert run_cli(config, db, "init").returncode == 0
    for args in (("DK-1", "--policy", "dk", "allofmp3.com", "=exact.example"),
                 ("IT-1", "--policy", "it", "*.bloccato.example")):
        r = run_cli(config, db, "order", "add", args[0], "--authority", "Court", "--issued",
                    "2025-01-02", *args[1:])
        assert r.returncode == 0, r.stderr
    procs = {"dns": start(config, db, "dns"), "http": start(config, db, "http")}
    try:
        yield Site(config, db, dns_port, http_port, procs)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                stop(proc)


def test_verify_passes_on_a_working_setup_and_is_stored(
        site: Site) -> None:
    config, db = site.config, site.db
    r = run_cli(config, db, "verify", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(r.stdout)
    assert data["failed"] == 0 and data["sampled"] is False and data["targets"] == 3
    checks = {(c["channel"], c["subject"]): c for c in data["checks"]}
    assert ("dns", "exact.example") in checks  # =name: the name only
    assert not any(s.startswith("verify-") and s.endswith(".exact.example") for _, s in checks)
    assert ("dns", "bloccato.example") not in checks  # *.name: subdomains only
    wild = [s for ch, s in checks if ch == "dns" and s.endswith(".bloccato.example")]
    assert len(wild) == 1
    assert "NXDOMAIN" in checks[("dns", wild[0])]["detail"]  # the it policy's answer
    assert "127.0.0.80" in checks[("dns", "allofmp3.com")]["detail"]
    assert len(data["checks"]) == 2 * (2 + 1 + 1)  # dns and http for four names
    prom = db.parent / "verify.prom"
    text = run_cli(config, db, "verify", "DK-1", "--textfile", str(prom))
    assert text.returncode == 0
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(prom.read_text())
               for s in family.samples}
    assert samples[("blockd_verify_checks", (("result", "pass"),))] == 6
    assert samples[("blockd_verify_checks", (("result", "fail"),))] == 0
    assert abs(samples[("blockd_verify_last_run_timestamp_seconds", ())] - time.time()) < 60
    assert "PASS  dns  allofmp3.com  (DK-1): NOERROR 127.0.0.80, EDE 16 names DK-1" in text.stdout
    assert text.stdout.rstrip().endswith("6 passed, 0 failed: 2 targets in force")
    store = Store.open(str(db))
    try:
        last = store.last_verify("IT-1")
        assert last is not None and last["id"] == data["id"] and last["failed"] == 0
        assert last["orders"] == {"DK-1": [6, 0], "IT-1": [2, 0]}
        newest = store.last_verify("DK-1")
        assert newest is not None and newest["id"] == data["id"] + 1
        assert newest["head_seq"] == store.head().seq  # type: ignore[union-attr]
    finally:
        store.close()


def test_verify_fails_naming_the_target_when_a_service_is_down_or_wrong(
        site: Site, upstream: StubUpstream) -> None:
    config, db = site.config, site.db
    wrong = run_cli(config, db, "verify", "DK-1", "--dns", f"127.0.0.1:{upstream.port}")
    assert wrong.returncode == 1
    assert ("FAIL  dns  allofmp3.com  (DK-1): answered NOERROR 192.0.2.1; the dk policy "
            "wants NOERROR 127.0.0.80") in wrong.stdout
    elsewhere = run_cli(config, db, "verify", "DK-1", "--http", f"127.0.0.1:{free_port()}")
    assert elsewhere.returncode == 1
    assert "FAIL  http allofmp3.com  (DK-1): no answer from 127.0.0.1:" in elsewhere.stdout
    stop(site.procs["dns"])
    down = run_cli(config, db, "verify", "--json")
    assert down.returncode == 1
    data = json.loads(down.stdout)
    failed = {(c["channel"], c["subject"]) for c in data["checks"] if not c["ok"]}
    assert ("dns", "allofmp3.com") in failed and ("dns", "exact.example") in failed
    assert not any(ch == "http" for ch, _ in failed)  # the notice server still answers
    store = Store.open(str(db))
    try:
        last = store.last_verify()
        assert last is not None and last["failed"] == data["failed"] == 4
        assert {f["subject"] for f in last["failures"]} >= {"allofmp3.com", "exact.example"}
    finally:
        store.close()


@pytest.mark.parametrize(("args", "field"), [
    (("--dns", "not an address"), "--dns"),
    (("--http", "127.0.0.1:99999"), "--http"),
    (("NOPE-1",), "reference"),
    (("--sample", "-1"), "--sample"),
])
def test_bad_input_is_refused_in_one_line(site: Site,
                                          args: tuple[str, ...], field: str) -> None:
    config, db = site.config, site.db
    before = db_digest(db)
    r = run_cli(config, db, "verify", *args)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and field in r.stderr, r.stderr
    assert db_digest(db) == before


def test_sampling_says_so(site: Site) -> None:
    config, db = site.config, site.db
    r = run_cli(config, db, "verify", "--sample", "1")
    assert r.returncode == 0
    assert r.stdout.rstrip().endswith(
        "1 of 3 targets in force (a random sample; --sample 0 checks all)")


def test_address_targets_are_checked_in_the_kernel(tmp_path: Path, netns: str) -> None:  # noqa: F811
    db = tmp_path / "blockd.db"
    blockd_ns(netns, db, "init")
    blockd_ns(netns, db, "order", "add", "ES-1", "--authority", "Juzgado", "--issued",
              "2025-02-01", "45.33.32.0/24", "93.184.216.34")
    missing = blockd_ns(netns, db, "verify", "ES-1", "--nft", check=False)
    assert missing.returncode == 1
    assert "nftables table inet blockd does not exist" in missing.stdout
    blockd_ns(netns, db, "nft", "apply")
    ok = blockd_ns(netns, db, "verify", "ES-1", check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASS  nft  45.33.32.0/24  (ES-1): in the kernel's set" in ok.stdout
    blockd_ns(netns, db, "order", "target", "add", "ES-1", "198.51.100.7", "--force",
              "--justification", "test")  # in force, not yet in the kernel
    bad = blockd_ns(netns, db, "verify", "ES-1", check=False)
    assert bad.returncode == 1
    assert "FAIL  nft  198.51.100.7  (ES-1): not in the kernel's sets" in bad.stdout
