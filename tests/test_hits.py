"""Hits and the enforcement timeline against real daemons: DNS and HTTP traffic from many
client addresses, counted exactly, clients estimated, no address stored; retention; the
order's record of when each channel enforced it, against its deadline."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dns.message
import dns.query
import pytest
from conftest import db_digest, db_rows, stored_bytes
from dnsstub import StubUpstream
from hypothesis import given, settings
from hypothesis import strategies as st
from pgserver import STORES, PgServer

from blockd.core.hits import ERROR_3SIGMA, HitBucket, summarise
from blockd.core.sketch import Sketch, merge_stored, union_estimate
from blockd.store.hits import HitCounter
from blockd.store.shared import SharedStore

DNS_CLIENTS = [f"127.83.201.{i}" for i in range(10, 70)]  # 60 addresses
HTTP_CLIENTS = [f"127.83.202.{i}" for i in range(10, 35)]  # 25 addresses
OLD = (datetime.now(UTC) - timedelta(days=200)).date().isoformat()
RECENT = (datetime.now(UTC) - timedelta(days=3)).date().isoformat()


def run_cli(config: Path, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BLOCKD_CONFIG": str(config), "BLOCKD_ACTOR": "tester"}
    return subprocess.run([sys.executable, "-m", "blockd", *args, "--db", str(db)],
                          capture_output=True, text=True, env=env, timeout=60, check=False)


def start(config: Path, db: Path, kind: str) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "BLOCKD_CONFIG": str(config)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "blockd", "serve", kind, "--db", str(db), "--listen",
         "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on" in line or "http://" in line, line
    where = line.split("http://", 1)[1].split("/", 1)[0] if kind == "http" else \
        line.split("listening on ", 1)[1].split(" ", 1)[0]
    return proc, int(where.rsplit(":", 1)[1])


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)
    assert proc.returncode == 0


def ask(port: int, name: str, source: str) -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port,
                         source=source, timeout=3)


def get(port: int, host: str, source: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5,
                                      source_address=(source, 0))
    try:
        conn.request("GET", "/", headers={"Host": host})
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


@pytest.fixture(params=STORES)
def site(request: pytest.FixtureRequest, tmp_path: Path, upstream: StubUpstream
         ) -> tuple[Path, Path]:
    """(config, db): a DK order, and an order under a policy that feeds no client data;
    on SQLite, then on PostgreSQL (db is then its URL)."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "quiet.toml").write_text(
        'description = "quiet"\n[hits]\nretention_days = 10\n'
        'client_anonymisation = "none"\n')
    config = tmp_path / "blockd.toml"
    config.write_text(
        '[notice]\nipv4 = "127.0.0.80"\nresolve_cnames = false\n'
        f'[dns]\nupstream = ["127.0.0.1:{upstream.port}"]\nupstream_timeout = 0.3\n'
        'rate_limit = 100000\nrate_burst = 100000\n'
        f'[policies]\ndir = "{policies}"\n[hits]\nflush_interval = 0.2\n'
        f'[store]\nstate_dir = "{tmp_path / "state"}"\n')
    db = tmp_path / "blockd.db"
    if request.param == "postgresql":  # a str, as everything here passes str(db) on
        db = request.getfixturevalue("pg_url")
    assert run_cli(config, db, "init").returncode == 0
    for args in (("DK-1", "--policy", "dk", "allofmp3.com"),
                 ("Q-1", "--policy", "quiet", "quiet.example")):
        r = run_cli(config, db, "order", "add", args[0], "--authority", "Court",
                    "--issued", "2025-01-02", *args[1:])
        assert r.returncode == 0, r.stderr
    return config, db


def add_buckets(db: Path, rows: list[tuple[str, str, str, str, int]]) -> None:
    """Buckets written through the store, as the daemons' flushes write them."""
    from blockd.store.store import Store

    store = Store.open(str(db))
    try:
        store.add_hits([HitBucket(datetime.fromisoformat(day).date(), ref, target, channel, n)
                        for ref, day, target, channel, n in rows])
    finally:
        store.close()


def hits(config: Path, db: Path, *args: str) -> dict[str, object]:
    r = run_cli(config, db, "hits", *args, "--json")
    assert r.returncode == 0, r.stderr
    data: dict[str, object] = json.loads(r.stdout)
    return data


def rows_by(data: dict[str, object], key: str) -> dict[str, dict[str, object]]:
    rows = data["rows"]
    assert isinstance(rows, list)
    return {row[key]: row for row in rows}


def within(estimate: object, exact: int) -> bool:
    assert isinstance(estimate, int)
    return abs(estimate - exact) <= ERROR_3SIGMA * exact


def test_hits_from_many_clients_are_counted_and_no_client_is_stored(
        site: tuple[Path, Path]) -> None:
    config, db = site
    add_buckets(db, [("DK-1", OLD, "allofmp3.com", "dns", 4),  # past retention
                     ("DK-1", RECENT, "allofmp3.com", "dns", 4),
                     ("Q-1", RECENT, "quiet.example", "dns", 4)])
    dns_proc, dns_port = start(config, db, "dns")
    http_proc, http_port = start(config, db, "http")
    try:
        sent = 0
        for source in DNS_CLIENTS:
            for name in ("allofmp3.com", "www.allofmp3.com", "allofmp3.com"):
                assert ask(dns_port, name, source).rcode() == 0
                sent += 1
        for source in DNS_CLIENTS[:7]:
            ask(dns_port, "quiet.example", source)
        for source in HTTP_CLIENTS:
            assert get(http_port, "allofmp3.com", source) == 451
            assert get(http_port, "www.allofmp3.com", source) == 451
        time.sleep(1.0)  # two flush rounds
        raw = stored_bytes(db)
    finally:
        stop(dns_proc)
        stop(http_proc)
    raw += stored_bytes(db)
    # while running and after: text and binary, in one pass (PostgreSQL's files are MBs)
    forms = [f for client in DNS_CLIENTS + HTTP_CLIENTS for f in (
        client.encode(), socket.inet_aton(client),
        hashlib.sha256(client.encode()).hexdigest().encode())]
    assert re.findall(b"|".join(re.escape(f) for f in forms), raw) == []
    assert b"allofmp3.com" in raw  # the files read are the ones the store is written to

    by_channel = rows_by(hits(config, db, "--order", "DK-1", "--by", "channel",
                              "--since", "today"), "channel")
    assert by_channel["dns"]["hits"] == sent
    assert by_channel["http"]["hits"] == 2 * len(HTTP_CLIENTS)
    assert within(by_channel["dns"]["clients"], len(DNS_CLIENTS))
    assert within(by_channel["http"]["clients"], len(HTTP_CLIENTS))
    by_target = rows_by(hits(config, db, "--order", "DK-1", "--by", "target", "--channel",
                             "dns", "--since", "today"), "target")
    assert by_target["DK-1 allofmp3.com"]["hits"] == sent  # the subtree target matched
    quiet = rows_by(hits(config, db, "--order", "Q-1", "--since", "today"), "order")
    assert quiet["Q-1"]["hits"] == 7 and quiet["Q-1"]["clients"] is None  # none fed

    # the daemons pruned the bucket past the dk policy's 90 days, as one journal entry
    days = rows_by(hits(config, db, "--order", "DK-1", "--by", "day"), "day")
    assert OLD not in days and RECENT in days
    log = json.loads(run_cli(config, db, "audit", "log", "--json").stdout)
    prunes = [e for e in log if e["action"] == "hits.prune"]
    assert len(prunes) == 1 and prunes[0]["actor"].startswith("blockd-")
    assert prunes[0]["payload"]["buckets"] == 1
    assert prunes[0]["payload"]["from"] == OLD == prunes[0]["payload"]["to"]
    assert run_cli(config, db, "audit", "verify").returncode == 0

    show = json.loads(run_cli(config, db, "order", "show", "DK-1", "--json").stdout)
    assert show["hits"]["last_7_days"] == sent + 2 * len(HTTP_CLIENTS) + 4
    assert show["hits"]["total"] == show["hits"]["last_7_days"]
    text = run_cli(config, db, "order", "show", "DK-1").stdout
    assert f"Hits:            {sent + 2 * len(HTTP_CLIENTS) + 4} in the last 7 days" in text


def test_table_csv_and_top(site: tuple[Path, Path]) -> None:
    config, db = site
    add_buckets(db, [("DK-1", RECENT, "allofmp3.com", "dns", 5),
                     ("DK-1", RECENT, "b.example", "dns", 9)])
    table = run_cli(config, db, "hits")
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ORDER", "HITS", "CLIENTS", "FIRST", "LAST"]
    assert lines[1].split() == ["DK-1", "14", "-", RECENT, RECENT]
    top = run_cli(config, db, "hits", "--by", "target", "--top", "1", "--csv")
    assert top.stdout.splitlines() == ["target,hits,clients,first,last",
                                       f"DK-1 b.example,9,,{RECENT},{RECENT}"]
    assert run_cli(config, db, "hits", "--order", "Q-1").stdout.strip() == "no hits"


@pytest.mark.parametrize(("args", "field"), [
    (("--since", "yesterdayish"), "--since"),
    (("--since", "2025-13-01"), "--since"),
    (("--since", "today", "--until", "7d"), "--until"),
    (("--order", "NOPE-1"), "--order"),
    (("--order", ""), "--order"),
    (("--target", " "), "--target"),
    (("--json", "--csv"), "--csv"),
])
def test_bad_queries_are_refused_in_one_line(site: tuple[Path, Path], args: tuple[str, ...],
                                             field: str) -> None:
    config, db = site
    before = db_digest(db)
    r = run_cli(config, db, "hits", *args)
    assert r.returncode == 2
    assert r.stderr.startswith(f"blockd: error: {field}: ") and r.stderr.count("\n") == 1
    assert db_digest(db) == before


def test_prune_by_command_journals_once_and_keeps_what_is_due(
        site: tuple[Path, Path]) -> None:
    config, db = site
    eleven = (datetime.now(UTC) - timedelta(days=11)).date().isoformat()
    add_buckets(db, [("Q-1", eleven, "quiet.example", "http", 1),  # quiet keeps 10 days
                     ("DK-1", eleven, "allofmp3.com", "http", 1),  # dk keeps 90: stays
                     ("DK-1", OLD, "allofmp3.com", "http", 1)])
    r = run_cli(config, db, "hits", "prune", "--json")
    assert r.returncode == 0, r.stderr
    done = json.loads(r.stdout)
    assert done["deleted"] == 2 and done["from"] == OLD and done["to"] == eleven
    left = db_rows(db, "SELECT reference, CAST(day AS TEXT) FROM hits")
    assert left == [("DK-1", eleven)]
    months = db_rows(db, "SELECT reference, month, count FROM hit_months")
    assert months == [("DK-1", eleven[:7], 1)]  # the monthly totals follow
    assert hits(config, db, "--order", "DK-1")["total"] == 1
    assert hits(config, db, "--by", "day")["total"] == 1  # and the totals per day
    assert json.loads(run_cli(config, db, "hits", "prune", "--json").stdout) == {"deleted": 0}
    log = json.loads(run_cli(config, db, "audit", "log", "--json").stdout)
    assert [e["action"] for e in log].count("hits.prune") == 1
    assert run_cli(config, db, "audit", "verify").returncode == 0


def test_timeline_records_each_channel_once_and_flags_a_late_order(
        site: tuple[Path, Path]) -> None:
    config, db = site
    received = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M")
    r = run_cli(config, db, "order", "add", "DK-LATE", "--authority", "Court", "--issued",
                (datetime.now(UTC) - timedelta(days=31)).date().isoformat(), "--received",
                received, "--policy", "dk", "late.example")
    assert r.returncode == 0 and "after its enforcement deadline" in r.stderr
    before = json.loads(run_cli(config, db, "order", "show", "DK-LATE", "--json").stdout)
    assert before["enforcement"]["verdict"] == "overdue"
    started = datetime.now(UTC)
    dns_proc, _ = start(config, db, "dns")
    http_proc, _ = start(config, db, "http")
    time.sleep(0.8)
    stop(dns_proc)
    stop(http_proc)
    first = json.loads(run_cli(config, db, "order", "show", "DK-LATE", "--json").stdout)
    channels = {c["channel"]: c for c in first["enforcement"]["channels"]}
    assert set(channels) == {"dns", "http"}
    for c in channels.values():
        since = datetime.fromisoformat(c["since"])
        assert started - timedelta(seconds=1) <= since <= datetime.now(UTC)
        assert c["verdict"] == "missed"
    assert first["enforcement"]["verdict"] == "missed"
    assert "DEADLINE MISSED" in run_cli(config, db, "order", "show", "DK-LATE").stdout
    on_time = json.loads(run_cli(config, db, "order", "show", "DK-1", "--json").stdout)
    assert on_time["enforcement"]["verdict"] == "met"
    rows = db_rows(db, "SELECT COUNT(*) FROM enforcements")[0][0]
    dns_proc, _ = start(config, db, "dns")  # a restart applies the same entries again
    time.sleep(0.8)
    stop(dns_proc)
    assert db_rows(db, "SELECT COUNT(*) FROM enforcements")[0][0] == rows
    again = json.loads(run_cli(config, db, "order", "show", "DK-LATE", "--json").stdout)
    assert again["enforcement"] == first["enforcement"]  # the first times are kept


# -- the sketch and the summaries (pure) -------------------------------------------


def hashed(value: int) -> int:
    return int.from_bytes(hashlib.blake2b(value.to_bytes(8, "big"), digest_size=8).digest())


@given(st.sets(st.integers(min_value=0, max_value=2**40), max_size=400))
@settings(max_examples=60, deadline=None)
def test_small_sets_are_estimated_within_the_stated_error(values: set[int]) -> None:
    sketch = Sketch()
    for v in values:
        sketch.add(hashed(v))
    assert abs(sketch.estimate() - len(values)) <= max(2, ERROR_3SIGMA * len(values))
    assert Sketch.decode(sketch.encode()).registers == sketch.registers


def test_large_counts_are_estimated_within_the_stated_error() -> None:
    for n in (1_000, 20_000, 150_000):
        sketch = Sketch()
        for v in range(n):
            sketch.add(hashed(v + n))
        assert abs(sketch.estimate() - n) <= ERROR_3SIGMA * n, (n, sketch.estimate())


@given(st.lists(st.sets(st.integers(min_value=0, max_value=5000), max_size=300),
                min_size=1, max_size=5))
@settings(max_examples=40, deadline=None)
def test_merged_sketches_estimate_the_union(parts: list[set[int]]) -> None:
    stored = []
    for part in parts:
        sketch = Sketch()
        for v in part:
            sketch.add(hashed(v))
        stored.append(sketch.encode())
    union = set().union(*parts)
    whole = Sketch()
    for v in union:
        whole.add(hashed(v))
    assert union_estimate(stored) == whole.estimate()  # a union, never a sum


@given(st.lists(st.sets(st.integers(min_value=0, max_value=5000), max_size=500),
                min_size=2, max_size=4))
@settings(max_examples=60, deadline=None)
def test_stored_sketches_merge_as_their_registers_do(parts: list[set[int]]) -> None:
    """merge_stored (pair by pair while sparse) stores what merging the register
    arrays stores: the register-wise maximum, sparse or dense by the same rule."""
    stored = []
    whole = Sketch()
    for part in parts:
        sketch = Sketch()
        for v in part:
            sketch.add(hashed(v))
            whole.add(hashed(v))
        stored.append(sketch.encode())
    merged = stored[0]
    for other in stored[1:]:
        merged = merge_stored(merged, other)
    assert merged == whole.encode()


@given(st.lists(st.integers(min_value=0, max_value=10**6), max_size=150))
@settings(max_examples=60, deadline=None)
def test_pending_registers_store_what_a_sketch_stores(clients: list[int]) -> None:
    """A pending bucket holds one register as an int, then a dict, then the array; each
    form is written as the sketch of the same clients is."""
    counter = HitCounter(SharedStore("/nonexistent/never-opened.db"))
    whole = Sketch()
    for c in clients:
        address = f"10.{c >> 16 & 255}.{c >> 8 & 255}.{c & 255}"
        counter.add("dns", "R", "a.example", 1, address)
        whole.registers[counter._hashed[address][0]] = max(
            whole.registers[counter._hashed[address][0]], counter._hashed[address][1])
    for _key, (count, slots) in counter.entries.items():
        assert count == len(clients)
        assert Sketch.encode_slots(slots) == whole.encode()
        assert Sketch.from_slots(slots).registers == whole.registers


@given(st.binary(max_size=2000))
def test_garbage_is_refused_or_read_as_registers(data: bytes) -> None:
    """A damaged blob raises ValueError (the query then fails loudly), never IndexError or
    a sketch with registers out of range."""
    try:
        sketch = Sketch.decode(data)
    except ValueError:
        return
    assert len(sketch.registers) == 1024 and sketch.estimate() >= 0


def test_summaries_sum_counts_and_order_busiest_first() -> None:
    day = datetime(2026, 1, 5, tzinfo=UTC).date()
    buckets = [HitBucket(day, "A", "a.example", "dns", 3),
               HitBucket(day, "B", "b.example", "dns", 10),
               HitBucket(day + timedelta(days=1), "A", "a.example", "http", 4)]
    summary = summarise(buckets, "order")
    assert [(g.key, g.hits) for g in summary.groups] == [("B", 10), ("A", 7)]
    assert summary.total == 17 and summary.clients is None
    by_day = summarise(buckets, "day")
    assert [g.key for g in by_day.groups] == ["2026-01-05", "2026-01-06"]
    assert [g.key for g in summarise(buckets, "order", top=1).groups] == ["B"]
    sketch = Sketch()
    sketch.add(hashed(1))
    damaged = summarise([HitBucket(day, "A", "", "dns", 1, sketch.encode()),
                         HitBucket(day, "A", "", "http", 1, b"\x07junk")], "order")
    assert damaged.damaged == 1 and damaged.clients == 1 and damaged.total == 2


@pytest.fixture(scope="module", params=STORES)
def spread(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[str]:
    """A store with buckets over 150 days of three orders, written as daemons write (on
    SQLite and on PostgreSQL, whose SQL for the sums differs)."""
    from blockd.store.store import Store

    if request.param == "sqlite":
        db = str(tmp_path_factory.mktemp("spread") / "blockd.db")
    else:
        server: PgServer = request.getfixturevalue("pg_server")
        db = server.url(server.new_database())
    store = Store.open(db, create=True)
    store.init()
    start = datetime(2026, 1, 20, tzinfo=UTC).date()
    batch = [HitBucket(start + timedelta(days=d), f"O-{o}", f"t{d % 3}.example", channel,
                       1 + (d * 7 + o) % 11)
             for d in range(0, 150, 2) for o in range(3) for channel in ("dns", "http")]
    store.add_hits(batch[: len(batch) // 2])
    store.add_hits(batch[len(batch) // 2 :])
    store.add_hits(batch[:40])  # the same buckets again: counts add up
    store.close()
    yield db


@given(st.integers(min_value=-5, max_value=160), st.integers(min_value=0, max_value=170),
       st.sampled_from(["order", "channel", "day"]))
@settings(max_examples=60, deadline=None)
def test_sums_over_months_and_days_agree_with_the_daily_buckets(
        spread: str, since_day: int, length: int, by: str) -> None:
    """Whole months come from the monthly totals, the ends from the days: the same sums
    as adding up every daily bucket, for any range."""
    from blockd.core.hits import HitQuery
    from blockd.store.store import Store

    start = datetime(2026, 1, 20, tzinfo=UTC).date()
    since = start + timedelta(days=since_day)
    query = HitQuery(since=since, until=since + timedelta(days=length), by=by)
    store = Store.open(spread)
    try:
        fast = store.hit_summary(query)
        slow = summarise(store.hit_buckets(query), by)
        assert [(g.key, g.hits, g.first, g.last) for g in fast.groups] == \
            [(g.key, g.hits, g.first, g.last) for g in slow.groups]
        unbounded = HitQuery(by=by, until=query.until)
        assert store.hit_summary(unbounded).total == \
            summarise(store.hit_buckets(unbounded), by).total
    finally:
        store.close()


@pytest.mark.parametrize(("mode", "clients", "estimate"), [
    ("hash", ["192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2"], 4),
    ("truncate", ["192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2"], 2),  # /24, /48
    ("none", ["192.0.2.1", "192.0.2.2"], None),
    ("drop", ["192.0.2.1"], None),
])
def test_the_policy_decides_what_feeds_the_estimate(tmp_path: Path, mode: str,
                                                    clients: list[str],
                                                    estimate: int | None) -> None:
    from blockd.core.enforcement import Anonymisation
    from blockd.store.hits import HitCounter
    from blockd.store.shared import SharedStore

    counter = HitCounter(SharedStore(str(tmp_path / "unused.db")),
                         lambda _ref: Anonymisation(mode))
    for client in clients:
        counter.channel("dns").add("REF-1", "a.example", 1, client)
    assert sum(counter.pending.values()) == len(clients)  # counted either way
    sketches = list(counter.sketches.values())
    assert (sketches[0].estimate() if sketches else None) == estimate
