"""Prometheus metrics: the families every daemon exposes, read with prometheus_client's
parser from real scrapes; two DNS workers seen through one /metrics; the shipped Grafana
dashboard and alert rules use only names a scrape has."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import dns.message
import dns.opcode
import dns.query
import pytest
import yaml
from daemons import Daemon, cli, free_port, metric_of, scrape, stop_daemon
from dnsstub import StubUpstream
from prometheus_client.parser import text_string_to_metric_families

from blockd.config import ConfigError, DnsSettings, load_config
from blockd.core.guard import load_guard
from blockd.core.index import compile_index
from blockd.core.model import OrderRecord
from blockd.core.names import parse_target
from blockd.daemon.controller import Controller
from blockd.daemon.core import Core
from blockd.daemon.dns import DnsDaemon
from blockd.daemon.http import HttpDaemon
from blockd.daemon.metrics import STALE_AFTER, WorkerFiles, histogram, merge, nft_group
from blockd.daemon.process import reload_core
from blockd.daemon.rpz import RpzDaemon
from blockd.dns.answers import BlockedAnswers
from blockd.dns.service import DnsService
from blockd.dns.upstream import DURATION_BUCKETS, Upstreams, UpstreamStats
from blockd.nft.reconcile import Reconciler, nft_actions, notice_of

DOCS = Path(__file__).resolve().parent.parent / "docs"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def families(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """Family name -> [(sample name, labels, value)] as prometheus_client parses it."""
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples]
            for f in text_string_to_metric_families(text)}


def sample_names(text: str) -> set[str]:
    return {s for samples in families(text).values() for s, _, _ in samples}


# -- the resolver's counters -------------------------------------------------------------


def test_every_query_is_counted_once_under_one_result() -> None:
    policy = compile_index([
        OrderRecord("DK-1", "Court", date(2006, 10, 25), NOW,
                    targets=frozenset({parse_target("allofmp3.com")})),
        OrderRecord("IT-1", "AGCOM", date(2024, 2, 1), NOW, policy="it",
                    targets=frozenset({parse_target("bloccato.example")}))], NOW)
    settings = DnsSettings(upstream=(("127.0.0.1", 9),), upstream_timeout=0.05,
                           allow=("127.0.0.0/8",), rate_limit=1e9, rate_burst=1e9)
    svc = DnsService(lambda: policy, BlockedAnswers({}, "127.0.0.80", "::80", "https://x/"),
                     settings, Upstreams(settings.upstream, timeout=0.05))

    def ask(data: bytes, client: str = "127.0.0.1", tcp: bool = False) -> None:
        reply = svc.handle(data, client, tcp)
        if reply is not None and not isinstance(reply, bytes):
            asyncio.run(_await(reply))

    def q(name: str, rdtype: str = "A", **kw: object) -> bytes:
        return dns.message.make_query(name, rdtype, **kw).to_wire()  # type: ignore[arg-type]

    blocked = q("www.allofmp3.com", use_edns=0)
    for _ in range(3):  # the first builds the answer, the others replay the memo
        ask(blocked)
    ask(blocked, tcp=True)
    ask(q("x.bloccato.example"))
    ask(q("example.org", "ANY"))
    ask(q("example.org", use_edns=1))  # EDNS version 1: BADVERS
    notify = dns.message.make_query("example.org", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    ask(notify.to_wire())
    ask(b"\x12\x34\x01\x00\x00\x02" + b"\x00" * 6 + b"\x00\x00\x01\x00\x01")  # 2 questions
    ask(b"\x00")  # dropped: shorter than a header
    ask(q("www.allofmp3.com"), client="192.0.2.1")  # not allowed: REFUSED
    ask(q("unblocked.example"))  # no upstream answers: SERVFAIL
    stats = svc.stats
    assert stats.blocked_by_policy == {"default": 4, "it": 1}
    results = stats.results()
    assert {k: v for k, v in results.items() if v} == {
        "blocked": 5, "badvers": 1, "notimp": 1, "formerr": 1,
        "dropped": 1, "refused_acl": 1, "servfail": 2}  # ANY is forwarded: SERVFAIL too
    assert sum(results.values()) == stats.queries == 12
    ask(q("localhost"))  # answered here (RFC 6761)
    ask(dns.message.make_query("version.bind", "TXT", rdclass="CH").to_wire())
    results = stats.results()
    assert (results["local"], results["refused"]) == (1, 1)
    assert sum(results.values()) == stats.queries == 14


async def _await(reply: object) -> object:
    return await reply  # type: ignore[misc]


def test_upstream_durations_make_a_cumulative_histogram() -> None:
    stats = UpstreamStats()
    for seconds in (0.0005, 0.001, 0.003, 0.3, 7.0):
        stats.observe(seconds)
    family = histogram("d_seconds", "d", DURATION_BUCKETS, stats.duration_counts,
                       stats.duration_sum)
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert (buckets["0.001"], buckets["0.005"], buckets["0.5"], buckets["5.0"],
            buckets["+Inf"]) == (2, 3, 4, 4, 5)
    assert list(buckets.values()) == sorted(buckets.values())


# -- workers through files ---------------------------------------------------------------


def test_worker_files_are_merged_with_a_worker_label(tmp_path: Path) -> None:
    own = list(text_string_to_metric_families(
        '# TYPE blockd_dns_queries_total counter\n'
        'blockd_dns_queries_total{result="blocked"} 3\n'))
    w0 = WorkerFiles(tmp_path, "dns", 0, 3, run=1)
    w1 = WorkerFiles(tmp_path, "dns", 1, 3, run=1)
    w2 = WorkerFiles(tmp_path, "dns", 2, 3, run=1)
    w1.write(b'# TYPE blockd_dns_queries_total counter\n'
             b'blockd_dns_queries_total{result="blocked"} 4\n')
    w2.write(b'# TYPE blockd_dns_queries_total counter\n'
             b'blockd_dns_queries_total{result="blocked"} 5\n')
    old = time.time() - STALE_AFTER - 1
    os.utime(w2.path(2), (old, old))  # a worker that stopped writing: left out
    peers = w0.peers()
    assert [w for w, _ in peers] == ["1"]
    text = merge([("0", own), *((w, text_string_to_metric_families(t)) for w, t in peers)])
    assert families(text.decode())["blockd_dns_queries"] == [
        ("blockd_dns_queries_total", {"result": "blocked", "worker": "0"}, 3.0),
        ("blockd_dns_queries_total", {"result": "blocked", "worker": "1"}, 4.0)]
    assert not list(w0.directory.glob("*.tmp"))
    # the directory of a run whose parent is gone is removed by the next run's worker 0
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = WorkerFiles(tmp_path, "dns", 1, 2, run=dead.pid)
    stale.write(b"")
    WorkerFiles(tmp_path, "dns", 0, 2, run=os.getpid()).remove_dead_runs()
    assert not stale.directory.exists() and w0.directory.exists()  # run 1 is init's pid


# -- one scrape with every family ----------------------------------------------------------


RECORDS = ["ok.example. 300 IN A 192.0.2.1"]


@pytest.fixture(scope="module")
def upstream() -> Iterator[StubUpstream]:
    with StubUpstream(RECORDS) as up:
        yield up


@dataclasses.dataclass
class Scraped:
    dns: Daemon
    http_port: int
    http_metrics: str
    core: Core


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory,
            upstream: StubUpstream) -> Iterator[Scraped]:
    """The resolver and the notice server on one core, each with its metrics address;
    the nftables group (which needs no kernel to be collected) added to the same core."""
    tmp = tmp_path_factory.mktemp("metrics")
    db = tmp / "blockd.db"
    config = tmp / "blockd.toml"
    config.write_text(
        '[notice]\nipv4 = "127.0.0.80"\nresolve_cnames = false\n'
        f'listen = ["127.0.0.1:0"]\nmetrics = "127.0.0.1:0"\n'
        f'[dns]\nupstream = ["127.0.0.1:{upstream.port}"]\nupstream_timeout = 0.3\n'
        'listen = ["127.0.0.1:0"]\nmetrics = "127.0.0.1:0"\n'
        '[rpz]\nlisten = ["127.0.0.1:0"]\n')
    os.environ["BLOCKD_CONFIG"] = str(config)
    try:
        assert cli(db, "init") == 0
        assert cli(db, "order", "add", "DK-1", "--authority", "Court", "--issued",
                   "2006-10-25", "--policy", "dk", "allofmp3.com", "45.33.32.0/24") == 0
    finally:
        del os.environ["BLOCKD_CONFIG"]
    base = load_config(config).with_db(str(db))
    handles: list[DnsDaemon | HttpDaemon | RpzDaemon] = []

    def build(core: Core) -> list[DnsDaemon | HttpDaemon | RpzDaemon]:
        reconciler = Reconciler(core.store, load_guard(base.policy_dirs),
                                nft_actions(core.enforcement), notice_of(base))
        core.metrics.add("nft", nft_group(reconciler))
        handles.extend([DnsDaemon(core), HttpDaemon(core), RpzDaemon(core)])
        return handles

    with Controller(base, build) as controller:
        dns_d, http_d, rpz_d = handles
        # a secondary has fetched the zone (its families have samples), and the records
        # are counted (after the start-up proof)
        [(_, rpz_port)] = controller.bound["rpz"]
        assert list(dns.query.xfr("127.0.0.1", base.rpz_zone, port=rpz_port))
        assert controller.core is not None
        controller.call(controller.core.verified)
        deadline = time.monotonic() + 20
        while isinstance(rpz_d, RpzDaemon) and rpz_d.stats.records is None:
            assert time.monotonic() < deadline, "the zone's records were never counted"
            time.sleep(0.02)
        assert isinstance(dns_d, DnsDaemon) and isinstance(http_d, HttpDaemon)
        [(host, port)] = controller.bound["dns"]
        assert dns_d.metrics_bound is not None and http_d.metrics_bound is not None
        assert "; metrics http://127.0.0.1:" in http_d.describe()
        mhost, mport = dns_d.metrics_bound
        hhost, hport = http_d.metrics_bound
        d = Daemon(host, port, db, metrics=f"http://{mhost}:{mport}/metrics",
                   controller=controller)
        assert controller.core is not None
        yield Scraped(d, controller.bound["http"][0][1],
                      f"http://{hhost}:{hport}/metrics", controller.core)


def test_one_scrape_has_every_family(running: Scraped) -> None:
    d = running.dns
    d.ask("www.allofmp3.com")
    d.ask("ok.example")
    d.ask("ok.example")
    for path in ("/", "/x?lang=de&x=%41"):  # the fast path, then aiohttp
        req = urllib.request.Request(f"http://127.0.0.1:{running.http_port}{path}",
                                     headers={"Host": "www.allofmp3.com"})
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req, timeout=3)
        assert exc.value.code == 451
        exc.value.close()
    text = scrape(d.metrics)
    got = families(text)
    for name in ("blockd_build_info", "blockd_store_healthy", "blockd_policy_journal_seq",
                 "blockd_policy_age_seconds", "blockd_policy_entries", "blockd_reload_errors",
                 "blockd_dns_queries", "blockd_dns_blocked", "blockd_dns_upstream_errors",
                 "blockd_dns_upstream_duration_seconds", "blockd_http_responses",
                 "blockd_http_connections_open", "blockd_nft_elements", "blockd_hits_pending",
                 "process_cpu_seconds", "process_resident_memory_bytes", "python_info"):
        assert name in got, name
    for name, samples in got.items():  # Prometheus naming: counters end in _total
        kind = next(f.type for f in text_string_to_metric_families(text) if f.name == name)
        if kind == "counter":
            assert all(s.endswith(("_total", "_created")) for s, _, _ in samples), name
    assert metric_of(text, "blockd_build_info") == 1.0
    assert metric_of(text, "blockd_dns_queries_total", result="blocked") >= 1
    assert metric_of(text, "blockd_dns_queries_total", result="forwarded") >= 1
    assert metric_of(text, "blockd_dns_queries_total", result="cache_hit") >= 1
    assert metric_of(text, "blockd_dns_blocked_total", policy="dk") >= 1
    assert metric_of(text, "blockd_dns_blocked_total", policy="uk") == 0  # there from the start
    assert metric_of(text, "blockd_dns_upstream_queries_total") >= 1
    assert metric_of(text, "blockd_dns_upstream_duration_seconds_count") >= 1
    assert metric_of(text, "blockd_policy_age_seconds") < 5
    assert metric_of(text, "blockd_policy_entries") == 2
    assert metric_of(text, "blockd_http_responses_total", code="451", path="fast") >= 1
    assert metric_of(text, "blockd_http_responses_total", code="451", path="aiohttp") >= 1
    assert metric_of(text, "blockd_nft_elements", set="v4_reject") == 0  # none applied
    assert not any("worker" in s.labels for f in text_string_to_metric_families(text)
                   for s in f.samples)  # one process: no worker label
    # the notice server's own metrics address serves the same core, and /healthz
    assert metric_of(scrape(running.http_metrics), "blockd_http_connections_accepted_total") >= 2
    with urllib.request.urlopen(running.http_metrics.replace("/metrics", "/healthz"),
                                timeout=3) as r:
        assert r.status == 200


def test_a_refused_reload_is_counted(running: Scraped, tmp_path: Path) -> None:
    before = running.dns.metric("blockd_reload_errors_total")
    broken = tmp_path / "broken.toml"
    broken.write_text("[dns]\nworkers = 0\n")
    assert not reload_core(running.core, lambda: load_config(broken))
    assert running.dns.metric("blockd_reload_errors_total") == before + 1
    with pytest.raises(ConfigError):
        load_config(broken)


# -- the shipped dashboard and alert rules ---------------------------------------------------

GENERATED_BY_PROMETHEUS = {"up"}
NAME = re.compile(r"\b((?:blockd|process|python)_[a-z0-9_]+|up)\b(?!\s*\()")


def used_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label values in quotes are left out)."""
    return set(NAME.findall(re.sub(r'"[^"]*"', '""', expr)))


def test_grafana_dashboard_uses_only_metrics_that_exist(running: Scraped) -> None:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    assert dashboard["title"] and dashboard["schemaVersion"] >= 36
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "instance"} <= variables
    exprs = []
    for panel in dashboard["panels"]:
        assert {"id", "type", "title", "gridPos"} <= panel.keys()
        if panel["type"] == "row":
            continue
        assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}"
        exprs += [t["expr"] for t in panel["targets"]]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    exprs.append(next(v["definition"] for v in dashboard["templating"]["list"]
                      if v["name"] == "instance"))
    have = sample_names(scrape(running.dns.metrics))
    used = set().union(*map(used_names, exprs))
    assert used - have == set()
    # the families the issue asks for are on it
    for needed in ("blockd_dns_queries_total", "blockd_dns_blocked_total",
                   "blockd_dns_upstream_duration_seconds_bucket",
                   "blockd_dns_upstream_errors_total", "blockd_policy_journal_seq",
                   "blockd_policy_age_seconds", "blockd_reload_errors_total",
                   "blockd_http_responses_total", "blockd_nft_elements",
                   "blockd_nft_applies_total", "blockd_nft_packets_total",
                   "blockd_rpz_zone_records", "blockd_rpz_zone_serial",
                   "blockd_rpz_secondary_serial_age_seconds", "blockd_rpz_transfers_total",
                   "blockd_rpz_notify_sent_total", "blockd_rpz_notify_failed_total"):
        assert needed in used, needed


def test_alert_rules_use_only_metrics_that_exist(running: Scraped) -> None:
    path = DOCS / "prometheus-alerts.yml"
    rules = [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {
        "BlockdStoreUnhealthy", "BlockdPolicyStale", "BlockdUpstreamsFailing",
        "BlockdJournalVerifyFailing", "BlockdVerifyFailing", "BlockdVerifyNotRunning",
        "BlockdRpzSecondaryStale"}
    from blockd.cli.verify import write_textfile

    textfile = running.dns.db.parent / "blockd-verify.prom"  # what `verify --textfile` writes
    write_textfile(textfile, 1.7e9, 12, 1, 0)
    assert 'blockd_verify_checks{result="fail"} 1.0' in textfile.read_text()
    have = sample_names(scrape(running.dns.metrics)) | sample_names(textfile.read_text()) | \
        GENERATED_BY_PROMETHEUS
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        assert used_names(rule["expr"]) and used_names(rule["expr"]) <= have, rule["alert"]
    assert next(r for r in rules if r["alert"] == "BlockdStoreUnhealthy")["for"] == "5m"
    stale = next(r for r in rules if r["alert"] == "BlockdRpzSecondaryStale")["expr"]
    assert "blockd_rpz_secondary_serial_age_seconds" in stale and "> 600" in stale
    promtool = shutil.which("promtool")
    if promtool is not None:  # Debian's prometheus package
        out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                             text=True)
        assert out.returncode == 0, out.stdout + out.stderr


# -- two workers, one scrape -----------------------------------------------------------------


def test_two_workers_are_scraped_through_one_metrics_address(running: Scraped) -> None:
    """`blockd serve dns --workers 2` as a real process: 200 UDP queries from many client
    sockets (the kernel spreads them over the workers by source port), then one scrape
    shows both workers, and their query counts add up to 200."""
    d = running.dns
    config = d.db.parent / "workers.toml"
    config.write_text('[notice]\nipv4 = "127.0.0.80"\n'
                      '[dns]\nrate_limit = 100000\nrate_burst = 100000\n')
    port = free_port()
    env = {**os.environ, "BLOCKD_CONFIG": str(config)}
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by stop_daemon
    proc = subprocess.Popen(
        [sys.executable, "-m", "blockd", "serve", "dns", "--db", str(d.db), "--listen",
         f"127.0.0.1:{port}", "--workers", "2", "--metrics", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    proc.log = log  # type: ignore[attr-defined]
    workers = Daemon("127.0.0.1", port, d.db, proc)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert all("listening on" in line for line in lines), lines
        [url] = [line.split("metrics ", 1)[1].strip() for line in lines if "metrics" in line]
        query = dns.message.make_query("www.allofmp3.com", "A")
        sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(50)]
        try:
            for i in range(200):
                answer = dns.query.udp(query, "127.0.0.1", port=port, timeout=3,
                                       sock=sockets[i % len(sockets)])
                assert str(answer.answer[0][0]) == "127.0.0.80"
        finally:
            for s in sockets:
                s.close()
        deadline = time.monotonic() + 5  # the other worker's file is up to 1 s old
        while True:
            text = scrape(url)
            per_worker = {w: metric_of(text, "blockd_dns_queries_total", worker=w)
                          for w in ("0", "1") if f'worker="{w}"' in text}
            if sum(per_worker.values()) == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert set(per_worker) == {"0", "1"}, text[:2000]
        assert sum(per_worker.values()) == 200, per_worker
        assert metric_of(text, "blockd_dns_blocked_total", policy="dk") == 200
        for w in ("0", "1"):  # each worker's own process and build
            assert metric_of(text, "process_resident_memory_bytes", worker=w) > 0
            assert metric_of(text, "blockd_build_info", worker=w) == 1
        assert {s.labels.get("worker") for f in text_string_to_metric_families(text)
                for s in f.samples} == {"0", "1"}
        with urllib.request.urlopen(url.replace("/metrics", "/healthz"), timeout=3) as r:
            assert r.status == 200
        files = list((d.db.parent / "blockd.db-state" / "metrics").glob("dns-*/worker-1.prom"))
        assert len(files) == 1
    finally:
        stop_daemon(workers)
    assert not files[0].exists()  # each worker removes its file when it stops


def test_serve_http_has_its_own_metrics_address(running: Scraped) -> None:
    """`blockd serve http --metrics`: the notice server's families and /healthz."""
    d = running.dns
    env = {**os.environ, "BLOCKD_CONFIG": str(d.db.parent / "blockd.toml")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "blockd", "serve", "http", "--db", str(d.db), "--listen",
         "127.0.0.1:0", "--metrics", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("blockd http: listening on http://127.0.0.1:"), line
        port = int(line.split("http://127.0.0.1:", 1)[1].split("/", 1)[0])
        url = line.split("; metrics ", 1)[1].strip()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/",
                                     headers={"Host": "allofmp3.com"})
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req, timeout=3)
        assert exc.value.code == 451
        exc.value.close()
        text = scrape(url)
        assert metric_of(text, "blockd_http_responses_total", code="451", path="fast") == 1
        assert metric_of(text, "blockd_policy_entries") == 2
        assert "blockd_dns_queries" not in families(text)  # only what this daemon runs
        with urllib.request.urlopen(url.replace("/metrics", "/healthz"), timeout=3) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert proc.returncode == 0
