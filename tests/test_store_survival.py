"""Enforcement outlives a damaged, replaced or missing store: real `blockd serve` processes
on loopback, the store changed under them as an unlucky operator or an attacker would."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from daemons import start_daemon, stop_daemon
from dnsstub import StubUpstream

from blockd.store.snapshot import read_head
from blockd.store.store import Store

BLOCKED = ["allofmp3.com", "mp3sparks.example", "clone.example"]


def run_cli(config: Path, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process: this test process keeps no SQLite handle on the file
    it rewrites (closing one would drop the daemons' locks, see pitfalls)."""
    env = {**os.environ, "BLOCKD_CONFIG": str(config), "BLOCKD_ACTOR": "tester"}
    return subprocess.run([sys.executable, "-m", "blockd", *args, "--db", str(db)],
                          capture_output=True, text=True, env=env, timeout=60, check=False)


@pytest.fixture(scope="module")
def upstream() -> Iterator[StubUpstream]:
    with StubUpstream(["ok.example. 300 IN A 192.0.2.1"]) as up:
        yield up


@pytest.fixture
def site(tmp_path: Path, upstream: StubUpstream) -> tuple[Path, Path]:
    """(config, db): a store with one order, integrity checks every second."""
    config = tmp_path / "blockd.toml"
    config.write_text(
        '[notice]\nipv4 = "127.0.0.80"\n'
        f'[dns]\nupstream = ["127.0.0.1:{upstream.port}"]\nupstream_timeout = 0.3\n'
        'rate_limit = 100000\nrate_burst = 100000\n'
        '[store]\ncheck_interval = 1.0\n[hits]\nflush_interval = 0.2\n')
    db = tmp_path / "blockd.db"
    assert run_cli(config, db, "init").returncode == 0
    r = run_cli(config, db, "order", "add", "FI-15124/2006", "--authority",
                "Copenhagen City Court", "--issued", "2006-10-25", *BLOCKED)
    assert r.returncode == 0, r.stderr
    return config, db


def snapshot_of(db: Path, instance: str = "dns") -> Path:
    return db.with_name(db.name + "-state") / f"{instance}.snapshot"


def head_of(db: Path) -> tuple[int, str]:
    store = Store.open(str(db))
    try:
        head = store.head()
        assert head is not None
        return head.seq, head.hash
    finally:
        store.close()


def wait_snapshot(db: Path, head: tuple[int, str], instance: str = "dns") -> None:
    deadline = time.monotonic() + 5
    while read_head(snapshot_of(db, instance)) != head:
        assert time.monotonic() < deadline, "the daemon wrote no snapshot of its policy"
        time.sleep(0.05)


def remove_store(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)


def test_store_replaced_by_a_fresh_init_is_refused(site: tuple[Path, Path]) -> None:
    """rm + init under running daemons: the blocks stay, /healthz names both heads, and
    the new store is followed only after the operator adopts it (journaled)."""
    config, db = site
    head = head_of(db)
    d = start_daemon(db, config, "--metrics", "127.0.0.1:0")
    try:
        remove_store(db)
        r = run_cli(config, db, "init")
        assert r.returncode == 0, r.stderr
        text = d.wait_health("store refused")
        assert f"seq {head[0]} ({head[1][:16]})" in text and "seq 0" in text
        assert all(d.is_blocked(n) for n in BLOCKED)
        assert d.metric("blockd_store_refused") == 1.0
        store = Store.open(str(db))
        try:
            store.adopt([head], reason="new store", actor="tester", at=datetime.now(UTC))
        finally:
            store.close()
        d.wait_health("ok")
        d.blocked_within("allofmp3.com", want=False, limit=2.0)  # the adopted store is empty
    finally:
        err = stop_daemon(d)
    assert "does not continue the one enforced here" in err


def test_restart_with_the_store_unreadable_serves_the_snapshot(
    site: tuple[Path, Path],
) -> None:
    """Both daemons restart while the store is garbage: they start from their snapshots,
    answer blocked names as blocked, and say they are unhealthy; without a snapshot the
    daemon refuses to start with one line."""
    config, db = site
    head = head_of(db)
    d = start_daemon(db, config, "--metrics", "127.0.0.1:0")
    h = start_http(config, db)
    try:
        wait_snapshot(db, head)
        wait_snapshot(db, head, "http")
    finally:
        stop_daemon(d)
        stop_http(h)
    good = db.read_bytes()
    remove_store(db)
    db.write_bytes(b"\x00garbage" * 8192)
    d = start_daemon(db, config, "--metrics", "127.0.0.1:0")
    h = start_http(config, db)
    try:
        assert all(d.is_blocked(n) for n in BLOCKED)
        assert not d.is_blocked("ok.example")
        text = d.wait_health("snapshot")
        assert text.startswith("store unreadable")
        assert d.metric("blockd_policy_from_snapshot") == 1.0
        status, _, body = http_get(h, "www.allofmp3.com")
        assert status == 451 and "FI-15124/2006" in body
        db.write_bytes(good)  # the store comes back: followed again
        d.wait_health("ok")
        assert all(d.is_blocked(n) for n in BLOCKED)
    finally:
        stop_daemon(d)
        stop_http(h)
    for instance in ("dns", "http"):
        snapshot_of(db, instance).unlink()
    db.write_bytes(b"\x00garbage" * 8192)
    r = subprocess.run([sys.executable, "-m", "blockd", "serve", "dns", "--db", str(db),
                        "--listen", "127.0.0.1:0"], capture_output=True, text=True,
                       env={**os.environ, "BLOCKD_CONFIG": str(config)}, timeout=30,
                       check=False)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "no snapshot of the last good policy" in r.stderr


def test_pages_corrupted_in_place_are_seen_within_a_check_interval(
    site: tuple[Path, Path],
) -> None:
    """Garbage in pages 2-10 with the header intact: the daemon's cached reads still work,
    its integrity check does not; it goes on enforcing and says the store is damaged."""
    config, db = site
    names = db.with_name("names.txt")
    names.write_text("".join(f"n{i}.example\n" for i in range(3000)))
    r = run_cli(config, db, "import", str(names), "--format", "list", "--order",
                "FI-15124/2006")
    assert r.returncode == 0, r.stderr
    assert run_cli(config, db, "init").returncode == 0  # (checkpoints the WAL)
    d = start_daemon(db, config, "--metrics", "127.0.0.1:0")
    try:
        d.wait_health("ok")
        with db.open("r+b") as fh:
            fh.seek(4096)
            fh.write(bytes(range(256)) * (9 * 4096 // 256))
        started = time.monotonic()
        text = d.wait_health("store damaged", limit=5.0)
        assert time.monotonic() - started < 3.0, text  # one interval (1 s) and the check
        assert d.metric("blockd_store_damaged") == 1.0
        assert d.is_blocked("allofmp3.com") and d.is_blocked("n7.example")
    finally:
        stop_daemon(d)


# -- the notice server as a process ------------------------------------------------


def start_http(config: Path, db: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "BLOCKD_CONFIG": str(config)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "blockd", "serve", "http", "--db", str(db), "--listen",
         "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "http://" in line, line
    proc.port = int(line.split("http://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])  # type: ignore[attr-defined]
    return proc


def stop_http(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.communicate(timeout=10)
    assert proc.returncode == 0


def http_get(proc: subprocess.Popen[str], host: str) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=5)  # type: ignore[attr-defined]
    try:
        conn.request("GET", "/", headers={"Host": host})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        conn.close()
