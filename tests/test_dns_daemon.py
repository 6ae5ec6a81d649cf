"""The real `blockd serve dns` on loopback, with a real store and a stub upstream.

Queries are made with dnspython (not dnslib, which blockd encodes with), so the codec is
not checked against itself. Orders change through the real CLI while the daemon runs.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from daemons import Daemon, cli, start_daemon, stop_daemon
from dnsstub import StubUpstream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockd.config import load_config
from blockd.daemon.controller import Controller
from blockd.daemon.core import Core
from blockd.daemon.dns import DnsDaemon

RECORDS = [
    "ok.example. 300 IN A 192.0.2.1",
    "ok.example. 300 IN AAAA 2001:db8::1",
    "short.example. 1 IN A 192.0.2.2",
    "alias.example. 300 IN CNAME www.allofmp3.com.",
    "chain.example. 300 IN CNAME alias2.example.",
    "alias2.example. 300 IN CNAME cdn.mp3clone.example.",
    "cdn.mp3clone.example. 300 IN A 192.0.2.3",
    "big.example. 300 IN A 192.0.2.4",
    *[f"many.example. 300 IN TXT \"{'x' * 60} {i}\"" for i in range(12)],
    "www.allofmp3.com. 300 IN A 192.0.2.66",
    "later.example. 300 IN A 192.0.2.5",
    "plain-alias.example. 300 IN CNAME ok.example.",
    "signed.example. 300 IN A 192.0.2.7",
    "withglue.example. 300 IN A 192.0.2.8",
    "week.example. 604800 IN A 192.0.2.9",
    "topbit.example. 4000000000 IN A 192.0.2.10",
    "cd.example. 300 IN A 192.0.2.11",
    "rd0.example. 300 IN A 192.0.2.12",
]


@pytest.fixture(scope="module")
def upstream() -> Iterator[StubUpstream]:
    with StubUpstream(RECORDS) as up:
        yield up


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, upstream: StubUpstream) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("dns")
    db = tmp / "blockd.db"
    config = tmp / "blockd.toml"
    config.write_text(
        '[notice]\nipv4 = "127.0.0.80"\nurl = "https://isp.example/blocking"\n'
        f'[dns]\nupstream = ["127.0.0.1:{upstream.port}"]\nupstream_timeout = 0.3\n'
        'rate_limit = 100000\nrate_burst = 100000\n[hits]\nflush_interval = 0.2\n'
    )
    os.environ["BLOCKD_CONFIG"] = str(config)
    try:
        assert cli(db, "init") == 0
        assert cli(db, "order", "add", "FI-15124/2006", "--authority",
                   "Copenhagen City Court", "--issued", "2006-10-25",
                   "allofmp3.com", "bücher.example", "=exact.example") == 0
        assert cli(db, "order", "add", "IT-2024/17", "--authority", "AGCOM",
                   "--issued", "2024-02-01", "--policy", "it", "nx-only.example") == 0
    finally:
        del os.environ["BLOCKD_CONFIG"]
    # in-process, on port 0, as `blockd serve dns` builds it (signals and workers are
    # tested against real processes below)
    base = load_config(config).with_db(str(db))
    settings = dataclasses.replace(base.dns, listen=(("127.0.0.1", 0),),
                                   metrics=("127.0.0.1", 0))
    dns_daemon: list[DnsDaemon] = []

    def build(core: Core) -> list[DnsDaemon]:
        dns_daemon.append(DnsDaemon(core))
        return dns_daemon

    with Controller(dataclasses.replace(base, dns=settings), build) as controller:
        [(host, port)] = controller.bound["dns"]
        assert dns_daemon[0].metrics_bound is not None
        mhost, mport = dns_daemon[0].metrics_bound
        yield Daemon(host, port, db, metrics=f"http://{mhost}:{mport}/metrics",
                     controller=controller, config=config)


@pytest.fixture(scope="module")
def proc_daemon(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A `blockd serve dns` process on a copy of the module's store."""
    assert daemon.config is not None
    tmp = tmp_path_factory.mktemp("dns-proc")
    db = tmp / "blockd.db"
    src = sqlite3.connect(daemon.db)
    dst = sqlite3.connect(db)
    src.backup(dst)  # SQLite's online backup: consistent while the daemon reads
    src.close()
    dst.close()
    d = start_daemon(db, daemon.config, "--metrics", "127.0.0.1:0")
    d.config = daemon.config
    yield d
    stop_daemon(d)


def ede(r: dns.message.Message) -> list[tuple[int, str]]:
    return [(o.code, o.text or "") for o in r.options if isinstance(o, dns.edns.EDEOption)]


def test_blocked_name_gets_notice_address_with_ede(daemon: Daemon) -> None:
    r = daemon.ask("www.allofmp3.com")
    assert r.rcode() == dns.rcode.NOERROR
    assert [(rr.rdtype, str(rr[0]), rr.ttl) for rr in r.answer] == [
        (dns.rdatatype.A, "127.0.0.80", 30)]
    [(code, text)] = ede(r)
    assert code == 16
    assert "FI-15124/2006" in text and "Copenhagen City Court" in text
    assert "https://isp.example/blocking" in text


def test_subdomains_idn_exact(daemon: Daemon) -> None:
    assert daemon.ask("a.b.c.ALLOFMP3.com").answer
    assert str(daemon.ask("allofmp3.com").answer[0][0]) == "127.0.0.80"
    assert str(daemon.ask("xn--bcher-kva.example").answer[0][0]) == "127.0.0.80"
    assert str(daemon.ask("exact.example").answer[0][0]) == "127.0.0.80"
    below = daemon.ask("www.exact.example")  # exact: subdomains not covered -> upstream
    assert below.rcode() == dns.rcode.NXDOMAIN and not ede(below)


def test_aaaa_and_other_types_get_nodata(daemon: Daemon) -> None:
    for rdtype in ("AAAA", "MX", "TXT"):
        r = daemon.ask("www.allofmp3.com", rdtype)
        assert r.rcode() == dns.rcode.NOERROR and not r.answer, rdtype
        assert r.authority[0].rdtype == dns.rdatatype.SOA
        assert r.authority[0].ttl == 30
        assert ede(r)[0][0] == 16


def test_policy_action_nxdomain(daemon: Daemon) -> None:
    r = daemon.ask("www.nx-only.example")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert "IT-2024/17" in ede(r)[0][1]


def test_no_ede_without_edns(daemon: Daemon) -> None:
    r = daemon.ask("www.allofmp3.com", edns=False)
    assert r.edns < 0 and str(r.answer[0][0]) == "127.0.0.80"


def test_forwarding_caching_and_case(daemon: Daemon, upstream: StubUpstream) -> None:
    before = len([q for q in upstream.queries if q[1] == "ok.example"])
    r1 = daemon.ask("ok.example")
    r2 = daemon.ask("OK.Example")
    assert str(r1.answer[0][0]) == "192.0.2.1"
    assert r2.question[0].name.to_text() == "OK.Example."  # 0x20 case echoed
    assert r2.answer[0].ttl <= 300
    assert len([q for q in upstream.queries if q[1] == "ok.example"]) == before + 1
    nx = daemon.ask("missing.example")
    assert nx.rcode() == dns.rcode.NXDOMAIN


def test_cname_chain_to_blocked_name_is_blocked(daemon: Daemon) -> None:
    r = daemon.ask("alias.example")
    assert str(r.answer[0][0]) == "127.0.0.80"
    assert "FI-15124/2006" in ede(r)[0][1]


def test_cli_changes_apply_within_a_second(daemon: Daemon) -> None:
    assert str(daemon.ask("cdn.mp3clone.example").answer[-1][0]) == "192.0.2.3"
    assert str(daemon.ask("chain.example").answer[-1][0]) == "192.0.2.3"  # now cached
    assert cli(daemon.db, "order", "target", "add", "FI-15124/2006", "mp3clone.example") == 0
    assert daemon.blocked_within("cdn.mp3clone.example", True) < 1.0
    assert daemon.blocked_within("chain.example", True) < 1.0  # cached chain re-checked
    assert cli(daemon.db, "order", "suspend", "FI-15124/2006", "--reason", "appeal") == 0
    assert daemon.blocked_within("www.allofmp3.com", False) < 1.0
    assert cli(daemon.db, "order", "resume", "FI-15124/2006", "--reason", "dismissed") == 0
    assert daemon.blocked_within("www.allofmp3.com", True) < 1.0


def test_sunset_takes_effect_without_a_command(daemon: Daemon) -> None:
    start = datetime.now(UTC) + timedelta(seconds=1)
    until = start + timedelta(seconds=1.5)
    assert cli(daemon.db, "order", "add", "UK-SUNSET-1", "--authority", "High Court",
               "--issued", "2026-01-01", "--effective-from", start.isoformat(),
               "--until", until.isoformat(), "later.example") == 0
    assert daemon.ask("later.example").answer[0][0].to_text() == "192.0.2.5"
    time.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds()))
    assert daemon.blocked_within("later.example", True) < 1.0
    time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()))
    assert daemon.blocked_within("later.example", False) < 1.0


def test_an_extended_order_stays_blocked_past_its_old_end(daemon: Daemon) -> None:
    until = datetime.now(UTC) + timedelta(seconds=1.5)
    assert cli(daemon.db, "order", "add", "UK-EXT-1", "--authority", "High Court",
               "--issued", "2026-01-01", "--until", until.isoformat(), "extended.example") == 0
    assert daemon.blocked_within("extended.example", True) < 1.0
    assert cli(daemon.db, "order", "extend", "UK-EXT-1", "--until",
               (until + timedelta(days=30)).isoformat(), "--reason", "extended by the court") == 0
    time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 0.5)
    assert daemon.blocked_within("extended.example", True) < 0.1  # still blocked
    assert cli(daemon.db, "order", "amend", "UK-EXT-1", "--until",
               (datetime.now(UTC) + timedelta(seconds=0.5)).isoformat(), "--reason",
               "varied on appeal") == 0
    assert daemon.blocked_within("extended.example", False, limit=2.0) < 2.0


def test_any_is_one_rrset_and_never_hides_a_denial(daemon: Daemon) -> None:
    """RFC 8482 as Unbound does it: the upstream's ANY answer cut to its first RRset; an
    NXDOMAIN stays NXDOMAIN and a CNAME owner gets its CNAME, not a synthesised record."""
    r = daemon.ask("ok.example", "ANY")  # the upstream holds A and AAAA for it
    assert [rr.rdtype for rr in r.answer] == [dns.rdatatype.A] and not r.additional
    assert daemon.ask("nosuch.example", "ANY").rcode() == dns.rcode.NXDOMAIN
    r = daemon.ask("plain-alias.example", "ANY")
    assert r.answer and r.answer[0].rdtype == dns.rdatatype.CNAME
    r = daemon.ask("ok.example", "ANY", tcp=True)
    assert [rr.rdtype for rr in r.answer] == [dns.rdatatype.A]


def test_truncation_and_tcp(daemon: Daemon, upstream: StubUpstream) -> None:
    small = daemon.ask("many.example", "TXT", edns=False)
    assert small.flags & dns.flags.TC and not small.answer
    full = daemon.ask("many.example", "TXT", tcp=True)
    assert len(full.answer[0]) == 12
    upstream.truncate_udp.add("big.example")
    r = daemon.ask("big.example")
    assert str(r.answer[0][0]) == "192.0.2.4"
    assert ("tcp", "big.example", "A") in upstream.queries  # retried upstream over TCP


def test_tcp_pipelining(daemon: Daemon) -> None:
    """Several queries on one connection, answered (possibly out of order) by ID."""
    with socket.create_connection((daemon.host, daemon.port), timeout=3) as s:
        names = ["www.allofmp3.com", "ok.example", "missing.example", "alias.example"]
        msgs = [dns.message.make_query(n, "A") for n in names]
        for m in msgs:
            w = m.to_wire()
            s.sendall(len(w).to_bytes(2, "big") + w)
        got = {}
        for _ in msgs:
            n = int.from_bytes(s.recv(2, socket.MSG_WAITALL), "big")
            r = dns.message.from_wire(s.recv(n, socket.MSG_WAITALL))
            got[r.id] = r
        assert {m.id for m in msgs} == set(got)


def test_bad_edns_version_and_opcode(daemon: Daemon) -> None:
    q = dns.message.make_query("ok.example", "A", use_edns=1)
    r = dns.query.udp(q, daemon.host, port=daemon.port, timeout=3)
    assert r.rcode() == dns.rcode.BADVERS and r.edns == 0
    q = dns.message.make_query("ok.example", "A")
    q.set_opcode(dns.opcode.STATUS)
    r = dns.query.udp(q, daemon.host, port=daemon.port, timeout=3)
    assert r.rcode() == dns.rcode.NOTIMP


def test_upstream_failure_servfail_then_stale(daemon: Daemon, upstream: StubUpstream) -> None:
    assert str(daemon.ask("short.example").answer[0][0]) == "192.0.2.2"  # TTL 1, cached
    time.sleep(1.2)
    upstream.silent = True
    try:
        r = daemon.ask("never-seen.example")
        assert r.rcode() == dns.rcode.SERVFAIL
        stale = daemon.ask("short.example")
        assert str(stale.answer[0][0]) == "192.0.2.2"
        assert stale.answer[0].ttl == 30
        assert ede(stale) == [(3, "")]
        assert str(daemon.ask("www.allofmp3.com").answer[0][0]) == "127.0.0.80"
    finally:
        upstream.silent = False


def test_hits_are_counted_in_the_store(daemon: Daemon) -> None:
    daemon.ask("hits.allofmp3.com")
    from blockd.store.store import Store

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        hits = Store.open(str(daemon.db)).hits("FI-15124/2006")
        if any(t == "allofmp3.com" and n > 0 for _, _, t, n in hits):
            return
        time.sleep(0.1)
    raise AssertionError("no hits recorded")


def test_metrics_show_the_index_and_the_hits_written(daemon: Daemon) -> None:
    from blockd.store.store import Store

    store = Store.open(str(daemon.db))
    head = store.head()
    store.close()
    assert head is not None
    deadline = time.monotonic() + 5
    while daemon.metric("blockd_policy_journal_seq") != head.seq:
        assert time.monotonic() < deadline, "the index in force is not the journal head"
        time.sleep(0.1)
    assert daemon.metric("blockd_policy_entries") >= 4  # the fixture's targets at least
    daemon.ask("metrics.allofmp3.com")
    deadline = time.monotonic() + 5
    while daemon.metric("blockd_hits_recorded_total") < 1:
        assert time.monotonic() < deadline, "hits not written"
        time.sleep(0.1)
    assert daemon.metric("blockd_hits_write_failures_total") == 0
    assert daemon.metric("blockd_dns_queries_total", result="blocked") >= 1
    assert daemon.metric("blockd_dns_blocked_total", policy="default") >= 1
    assert daemon.metric("blockd_dns_queries_total", result="ratelimited") == 0  # (README)


def test_acl_refuses_other_clients(tmp_path: Path, daemon: Daemon) -> None:
    other = start_daemon(daemon.db, daemon.config,
                         "--allow", "192.0.2.0/24")
    try:
        r = other.ask("www.allofmp3.com")
        assert r.rcode() == dns.rcode.REFUSED and not r.answer
        assert ede(r)[0][0] == 18
    finally:
        stop_daemon(other)


def test_malformed_packets_do_not_hurt(daemon: Daemon) -> None:
    samples = [b"", b"\x00", b"\x12\x34" + b"\x01\x00" + b"\x00\x01" * 4,
               b"\xff" * 40, bytes(range(256)),
               bytes.fromhex("abcd0100000100000000000050") + b"a" * 80 + b"\x00\x00\x01\x00\x01",
               bytes.fromhex("abcd01000001000000000000c00c00010001")]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for p in samples:
            s.sendto(p, (daemon.host, daemon.port))
    assert str(daemon.ask("www.allofmp3.com").answer[0][0]) == "127.0.0.80"
    assert daemon.alive()


def test_fail_closed_when_the_store_is_unreadable(proc_daemon: Daemon) -> None:
    """The file is damaged and restored under a running `blockd serve dns` process (not
    in-process: rewriting the file from a process with SQLite connections would release
    their locks)."""
    daemon = proc_daemon
    assert daemon.metric("blockd_store_healthy") == 1.0
    good = daemon.db.read_bytes()
    try:
        daemon.db.write_bytes(b"not a database at all" * 4096)  # the store is damaged
        deadline = time.monotonic() + 5
        while daemon.metric("blockd_store_healthy") != 0.0:
            assert time.monotonic() < deadline, "store damage not noticed"
            time.sleep(0.1)
        assert daemon.metric("blockd_store_errors_total") >= 1
        assert str(daemon.ask("www.allofmp3.com").answer[0][0]) == "127.0.0.80"  # enforced
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(daemon.metrics.replace("/metrics", "/healthz"), timeout=3)
        assert exc.value.code == 503
        exc.value.close()
    finally:
        daemon.db.write_bytes(good)
    deadline = time.monotonic() + 5
    while daemon.metric("blockd_store_healthy") != 1.0:
        assert time.monotonic() < deadline, "store recovery not noticed"
        time.sleep(0.1)
    assert str(daemon.ask("www.allofmp3.com").answer[0][0]) == "127.0.0.80"


def test_sighup_rereads_the_configuration(daemon: Daemon, tmp_path: Path) -> None:
    config = tmp_path / "hup.toml"
    assert daemon.config is not None
    base = daemon.config.read_text()
    config.write_text(base)
    d = start_daemon(daemon.db, config)
    try:
        assert d.ask("ok.example").rcode() == dns.rcode.NOERROR
        config.write_text(base.replace("[dns]\n", '[dns]\nallow = ["192.0.2.0/24"]\n'))
        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while d.ask("ok.example").rcode() != dns.rcode.REFUSED:
            assert time.monotonic() < deadline, "SIGHUP did not apply the new ACL"
            time.sleep(0.1)
    finally:
        assert "configuration reloaded" in stop_daemon(d)


def test_workers_share_the_port(daemon: Daemon) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "BLOCKD_CONFIG": str(daemon.config)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "blockd", "serve", "dns", "--db", str(daemon.db),
         "--listen", f"127.0.0.1:{port}", "--workers", "2"],
        stdout=subprocess.PIPE, stderr=(log := tempfile.TemporaryFile("w+")), text=True,  # noqa: SIM115
        env=env)
    proc.log = log  # type: ignore[attr-defined]
    workers = Daemon("127.0.0.1", port, daemon.db, proc)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert all("listening on" in line for line in lines), lines
        for _ in range(20):
            assert str(workers.ask("www.allofmp3.com").answer[0][0]) == "127.0.0.80"
    finally:
        stop_daemon(workers)


hostile = st.one_of(
    st.binary(min_size=0, max_size=300),
    st.builds(lambda n, cut, junk: dns.message.make_query(n, "A").to_wire()[:cut] + junk,
              st.sampled_from(["www.allofmp3.com", "ok.example", "x.example"]),
              st.integers(0, 40), st.binary(max_size=20)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(hostile, min_size=1, max_size=5))
def test_fuzz_the_running_daemon(daemon: Daemon, packets: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for p in packets:
            s.sendto(p, (daemon.host, daemon.port))
    with socket.create_connection((daemon.host, daemon.port), timeout=3) as t:
        for p in packets:
            t.sendall(len(p).to_bytes(2, "big") + p)
    assert daemon.alive()


def test_still_correct_after_fuzzing(daemon: Daemon) -> None:
    assert str(daemon.ask("www.allofmp3.com").answer[0][0]) == "127.0.0.80"
    assert str(daemon.ask("ok.example").answer[0][0]) == "192.0.2.1"
    assert daemon.ask("x.example", tcp=True).rcode() == dns.rcode.NXDOMAIN
    assert daemon.metric("blockd_dns_queries_total", result="error") == 0


def test_ipv6_listener_and_upstream_failover(daemon: Daemon, upstream: StubUpstream) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dead:
        dead.bind(("127.0.0.1", 0))  # a port with nobody answering
        dead_port = dead.getsockname()[1]
    d = start_daemon(daemon.db, daemon.config,
                     "--listen", "[::1]:0", "--upstream", f"127.0.0.1:{dead_port}",
                     "--upstream", f"127.0.0.1:{upstream.port}")
    try:
        assert d.host == "[::1]"
        d.host = "::1"
        assert str(d.ask("www.allofmp3.com", "A").answer[0][0]) == "127.0.0.80"
        r = d.ask("ok.example", "AAAA", tcp=True)
        assert str(r.answer[0][0]) == "2001:db8::1"  # the second upstream answered
    finally:
        stop_daemon(d)


# -- conformance (RFC 4035, 2181, 6891, 8482, 6761/6303, 2308, 6840), dnspython the oracle --


def asked(upstream: StubUpstream, name: str) -> int:
    return sum(1 for _, n, _ in upstream.queries if n == name)


def raw(daemon: Daemon, message: dns.message.Message | bytes) -> dns.message.Message:
    wire_ = message if isinstance(message, bytes) else message.to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(wire_, (daemon.host, daemon.port))
        return dns.message.from_wire(s.recv(65535))


def test_cd_is_copied_forwarded_and_part_of_the_cache_key(daemon: Daemon,
                                                         upstream: StubUpstream) -> None:
    q = dns.message.make_query("cd.example", "A", use_edns=0)
    q.flags |= dns.flags.CD
    before = len(upstream.flags)
    r = raw(daemon, q)
    assert r.flags & dns.flags.CD and r.answer
    assert upstream.flags[before] & dns.flags.CD  # RFC 4035 3.2.2
    n = asked(upstream, "cd.example")
    plain = daemon.ask("cd.example")
    assert not plain.flags & dns.flags.CD and plain.answer
    assert asked(upstream, "cd.example") == n + 1  # not the CD answer from the cache


def test_a_label_may_hold_any_octet(daemon: Daemon, upstream: StubUpstream) -> None:
    name = dns.name.Name([b"\xff\xfe", b"example", b""])
    r = raw(daemon, dns.message.make_query(name, "A", use_edns=0))
    assert r.rcode() == dns.rcode.NXDOMAIN and r.question[0].name == name
    assert r.edns == 0  # OPT answered
    assert asked(upstream, "\xff\xfe.example") == 1  # forwarded as sent
    dotted = dns.name.Name([b"a.b", b"allofmp3", b"com", b""])  # under a blocked name
    assert str(raw(daemon, dns.message.make_query(dotted, "A")).answer[0][0]) == "127.0.0.80"


def test_formerr_carries_opt_and_notimp_echoes_the_opcode(daemon: Daemon) -> None:
    q = dns.message.make_query("ok.example", "A", use_edns=0)
    data = bytearray(q.to_wire())
    data[4:6] = b"\x00\x02"  # two questions...
    question = q.to_wire()[12:-11]
    two = bytes(data[:-11]) + question + bytes(data[-11:])  # ...and the OPT after them
    r = raw(daemon, two)
    assert r.rcode() == dns.rcode.FORMERR and r.edns == 0  # RFC 6891 6.1.1
    notify = dns.message.make_query("ok.example", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    r = raw(daemon, notify)
    assert r.rcode() == dns.rcode.NOTIMP and r.opcode() == dns.opcode.NOTIFY


def test_additional_records_go_before_tc(daemon: Daemon, upstream: StubUpstream) -> None:
    upstream.glue["withglue.example"] = 40  # ~40 x 30 bytes: past 512
    r = daemon.ask("withglue.example", edns=False)
    assert not r.flags & dns.flags.TC and r.answer and not r.additional  # RFC 2181 9
    r = daemon.ask("withglue.example", tcp=True)
    assert len(r.additional) >= 1


def test_ttls_are_capped_and_the_top_bit_means_zero(daemon: Daemon) -> None:
    assert daemon.ask("week.example").answer[0].ttl == 86400  # cache_max_ttl
    assert daemon.ask("topbit.example").answer[0].ttl == 0  # RFC 2181 8


def test_ad_only_for_clients_that_ask_for_it(daemon: Daemon, upstream: StubUpstream) -> None:
    upstream.ad_names.add("signed.example")
    assert not daemon.ask("signed.example").flags & dns.flags.AD
    assert daemon.ask("signed.example", want_dnssec=True).flags & dns.flags.AD
    q = dns.message.make_query("signed.example", "A")
    q.flags |= dns.flags.AD
    assert raw(daemon, q).flags & dns.flags.AD  # RFC 6840 5.8


@pytest.mark.parametrize(("qclass", "qtype", "rcode"), [
    ("CH", "TXT", dns.rcode.REFUSED), ("HS", "A", dns.rcode.REFUSED),
    ("NONE", "A", dns.rcode.REFUSED), ("IN", "AXFR", dns.rcode.REFUSED),
    ("IN", "IXFR", dns.rcode.REFUSED), ("IN", "MAILB", dns.rcode.NOTIMP),
    ("IN", "MAILA", dns.rcode.NOTIMP),
])
def test_classes_and_meta_types_are_answered_at_once(daemon: Daemon, upstream: StubUpstream,
                                                    qclass: str, qtype: str,
                                                    rcode: dns.rcode.Rcode) -> None:
    before = len(upstream.queries)
    q = dns.message.make_query("version.bind", qtype, rdclass=qclass, use_edns=0)
    start = time.monotonic()
    r = raw(daemon, q)
    assert r.rcode() == rcode and r.edns == 0 and time.monotonic() - start < 0.5
    assert len(upstream.queries) == before  # no upstream slot taken


def test_qtype_opt_is_formerr(daemon: Daemon) -> None:
    q = dns.message.make_query("ok.example", "OPT")
    assert raw(daemon, q).rcode() == dns.rcode.FORMERR


@pytest.mark.parametrize(("name", "qtype", "rcode", "answer", "soa"), [
    ("localhost", "A", dns.rcode.NOERROR, "127.0.0.1", None),
    ("app.localhost", "AAAA", dns.rcode.NOERROR, "::1", None),
    ("1.0.0.127.in-addr.arpa", "PTR", dns.rcode.NOERROR, "localhost.", None),
    ("10.1.168.192.in-addr.arpa", "PTR", dns.rcode.NXDOMAIN, None, "168.192.in-addr.arpa."),
    ("5.0.0.10.in-addr.arpa", "PTR", dns.rcode.NXDOMAIN, None, "10.in-addr.arpa."),
    ("x.test", "A", dns.rcode.NXDOMAIN, None, "test."),
])
def test_special_use_names_are_answered_here(daemon: Daemon, upstream: StubUpstream,
                                             name: str, qtype: str, rcode: dns.rcode.Rcode,
                                             answer: str | None, soa: str | None) -> None:
    before = len(upstream.queries)
    r = daemon.ask(name, qtype)
    assert r.rcode() == rcode and bool(r.flags & dns.flags.AA)
    if answer is not None:
        assert r.answer[0][0].to_text() == answer
    if soa is not None:
        assert r.authority[0].name.to_text() == soa
    assert len(upstream.queries) == before  # RFC 6761/6303: never forwarded


def test_rd0_answers_from_the_cache_only(daemon: Daemon, upstream: StubUpstream) -> None:
    q = dns.message.make_query("rd0.example", "A")
    q.flags &= ~dns.flags.RD
    assert raw(daemon, q).rcode() == dns.rcode.REFUSED
    assert asked(upstream, "rd0.example") == 0
    assert daemon.ask("rd0.example").answer  # now cached
    r = raw(daemon, q)
    assert r.rcode() == dns.rcode.NOERROR and r.answer
    assert asked(upstream, "rd0.example") == 1


def test_blocked_negative_answer_soa_is_not_at_a_denied_name(daemon: Daemon) -> None:
    r = daemon.ask("www.nx-only.example")
    assert r.rcode() == dns.rcode.NXDOMAIN
    [soa] = r.authority
    assert soa.name.to_text() == "example."  # the blocked target's parent (RFC 2308)
    r = daemon.ask("nx-only.example")
    assert r.authority[0].name.to_text() == "example."
