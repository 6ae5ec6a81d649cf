"""The store on a real PostgreSQL server shared by several appliances: typed errors from
SQLSTATEs, writers on many machines serialised (several real CLI processes at once), a
real daemon following a CLI change, a daemon outliving a stopped server, a re-created
database refused until adopted, `store migrate` from SQLite, and what SQLite-only
commands say on PostgreSQL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg
import pytest
from conftest import Runner
from daemons import Daemon, start_daemon, stop_daemon
from dnsstub import StubUpstream
from pgserver import PgServer

from blockd.core.model import OrderRecord
from blockd.core.names import parse_target
from blockd.store import engine as engine_module
from blockd.store import store as store_module
from blockd.store.engine import (
    StoreConflict,
    StoreLocked,
    StoreMissing,
    StoreReadOnly,
    StoreSchemaError,
)
from blockd.store.snapshot import read_head
from blockd.store.store import WRITE_LOCK, Store
from blockd.store.tables import JournalRow

NOW = datetime(2026, 1, 1, tzinfo=UTC)
BLOCKED = ["allofmp3.com", "mp3sparks.example"]


def order(ref: str) -> OrderRecord:
    return OrderRecord(reference=ref, authority="Court", issued_on=date(2025, 12, 1),
                       received_at=NOW)


def initialised(url: str) -> Store:
    s = Store.open(url, create=True)
    s.init()
    return s


def run_cli(config: Path | None, db: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BLOCKD_ACTOR": "tester"}
    env.pop("BLOCKD_CONFIG", None)
    if config is not None:
        env["BLOCKD_CONFIG"] = str(config)
    return subprocess.run([sys.executable, "-m", "blockd", *args, "--db", db],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


# -- typed errors ------------------------------------------------------------------------


def test_errors_are_typed_from_sqlstates(pg_server: PgServer, pg_url: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused connection and unknown database: StoreMissing; not initialised:
    StoreSchemaError; no write privilege: StoreReadOnly; a lock held past the busy
    timeout: StoreLocked; a duplicate seq: StoreConflict. Each one line, no password."""
    closed = f"postgresql://blockd:secret@127.0.0.1:{pg_server.port + 1}/x"
    with pytest.raises(StoreMissing, match="cannot connect") as refused:
        Store.open(closed)
    assert "secret" not in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(StoreMissing, match="does not exist"):
        Store.open(pg_server.url("no_such_database"))
    # a server that accepts and never answers (a black hole) is given up after the
    # connect timeout, not waited for
    monkeypatch.setattr(engine_module, "CONNECT_TIMEOUT_S", 2)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with pytest.raises(StoreMissing, match="cannot connect"):
            Store.open(f"postgresql://blockd@127.0.0.1:{port}/x")
    with pytest.raises(StoreSchemaError, match="not initialised"):
        Store.open(pg_url)

    store = initialised(pg_url)
    try:
        store.add_order(order("A"), [parse_target("a.example")], actor="t", at=NOW)
        with pytest.raises(StoreConflict, match="conflicting change"), store._write() as s:
            s.add(JournalRow(seq=1, at="x", actor="t", action="x", payload="{}",
                             prev_hash="0", hash="0"))
        name = pg_url.rsplit("/", 1)[1]
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("CREATE ROLE reader_role LOGIN")  # (pg_url drops it again)
            admin.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader_role")
        reader = Store.open(f"postgresql://reader_role@127.0.0.1:{pg_server.port}/{name}")
        try:
            assert reader.head() == store.head()  # reading works
            with pytest.raises(StoreReadOnly):
                reader.add_order(order("B"), [], actor="t", at=NOW)
        finally:
            reader.close()

        with psycopg.connect(pg_url, autocommit=True) as admin:  # not a blockd schema now
            admin.execute("ALTER TABLE journal RENAME TO journal_gone")
            with pytest.raises(StoreSchemaError, match=r"not initialised.*journal"):
                store.head()
            admin.execute("ALTER TABLE journal_gone RENAME TO journal")

        monkeypatch.setattr(store_module, "BUSY_TIMEOUT_MS", 300)
        with psycopg.connect(pg_url) as other:  # another appliance holds the write lock
            other.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            with pytest.raises(StoreLocked, match="held the lock"):
                store.add_order(order("L"), [], actor="t", at=NOW)
            other.rollback()
        store.add_order(order("L"), [], actor="t", at=NOW)
        assert [e.seq for e in store.journal()] == [1, 2]
        assert store.verify() == []
    finally:
        store.close()


# -- writers on several machines ---------------------------------------------------------


def test_concurrent_cli_writers_never_fork_the_chain(pg_url: str, blockd: Runner) -> None:
    """Several `blockd` processes write at once (as appliances sharing the store would):
    every command succeeds, the seqs are contiguous and `audit verify` passes."""
    assert run_cli(None, pg_url, "init").returncode == 0
    writers = 4  # each a CLI process (~1 s of start-up CPU on this 2-core machine)

    def all_at_once(make: list[list[str]]) -> None:
        env = {**os.environ, "BLOCKD_ACTOR": "tester"}
        env.pop("BLOCKD_CONFIG", None)
        procs = [subprocess.Popen([sys.executable, "-m", "blockd", *args, "--db", pg_url],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env) for args in make]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err

    all_at_once([["order", "add", f"R-{i}", "--authority", "Court", "--issued",
                  "2026-01-01", f"site{i}.example"] for i in range(writers)])
    all_at_once([["order", "target", "add", f"R-{i}", f"clone{i}.example", f"b{i}.example"]
                 for i in range(writers)])
    store = Store.open(pg_url)
    try:
        assert [e.seq for e in store.journal()] == list(range(1, 2 * writers + 1))
    finally:
        store.close()
    r = blockd("audit", "verify", "--db", pg_url)
    assert r.code == 0, r.err
    assert f"journal OK: {2 * writers} entries" in r.out


# -- daemons on PostgreSQL -------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path, pg_url: str, upstream: StubUpstream) -> tuple[Path, str]:
    """(config, db URL): one order on PostgreSQL, the daemons' state in tmp_path."""
    config = tmp_path / "blockd.toml"
    config.write_text(
        '[notice]\nipv4 = "127.0.0.80"\n'
        f'[dns]\nupstream = ["127.0.0.1:{upstream.port}"]\nupstream_timeout = 0.3\n'
        'rate_limit = 100000\nrate_burst = 100000\n'
        f'[store]\nstate_dir = "{tmp_path / "state"}"\ncheck_interval = 1.0\n'
        '[hits]\nflush_interval = 0.2\n')
    assert run_cli(config, pg_url, "init").returncode == 0
    r = run_cli(config, pg_url, "order", "add", "FI-15124/2006", "--authority",
                "Copenhagen City Court", "--issued", "2006-10-25", *BLOCKED)
    assert r.returncode == 0, r.stderr
    return config, pg_url


def head_of(db: str) -> tuple[int, str]:
    store = Store.open(db)
    try:
        head = store.head()
        assert head is not None
        return head.seq, head.hash
    finally:
        store.close()


def wait_snapshot(snapshot: Path, head: tuple[int, str]) -> None:
    deadline = time.monotonic() + 5
    while read_head(snapshot) != head:
        assert time.monotonic() < deadline, "the daemon wrote no snapshot of its policy"
        time.sleep(0.05)


def test_a_daemon_follows_a_cli_change_within_a_second(site: tuple[Path, str],
                                                       blockd: Runner) -> None:
    """A real `blockd serve dns` on PostgreSQL sees `order add` run by the CLI (in this
    process, so the clock starts when the command has committed); the latencies are
    printed."""
    config, db = site
    d = start_daemon(db, config, "--metrics", "127.0.0.1:0")  # type: ignore[arg-type]
    try:
        assert all(d.is_blocked(n) for n in BLOCKED)
        assert d.healthz() == (200, "ok\n")
        deadline = time.monotonic() + 5
        while d.metric("blockd_store_listening") != 1.0:  # woken by NOTIFY, not the poll
            assert time.monotonic() < deadline, "no LISTEN in place"
            time.sleep(0.05)
        seen = []
        for i in range(3):
            name = f"new{i}.example"
            assert not d.is_blocked(name)
            r = blockd("order", "add", f"NEW-{i}", "--authority", "Court", "--issued",
                       "2026-01-01", name, "--db", db)
            assert r.code == 0, r.err
            seen.append(d.blocked_within(name, True, limit=5.0))
        print(f"\nPostgreSQL: order add committed -> blocked answer: "
              f"{', '.join(f'{s * 1000:.0f} ms' for s in seen)}")
        assert sorted(seen)[1] < 1.0, seen  # the median: one slow scheduler tick is noise
    finally:
        stop_daemon(d)


def test_a_stopped_server_leaves_the_daemon_enforcing(
        site: tuple[Path, str], pg_server: PgServer) -> None:
    """The server stops under a running daemon: it keeps answering from the last good
    policy and reports unhealthy; a daemon started meanwhile serves its snapshot; when
    the server is back both are healthy and follow new orders again."""
    config, db = site
    snapshot = config.parent / "state" / "dns.snapshot"
    d = start_daemon(db, config, "--metrics", "127.0.0.1:0")  # type: ignore[arg-type]
    late: Daemon | None = None
    try:
        wait_snapshot(snapshot, head_of(db))
        pg_server.stop()
        try:
            text = d.wait_health("store unreadable")
            assert "last good policy" in text
            assert all(d.is_blocked(n) for n in BLOCKED)
            assert not d.is_blocked("ok.example")
            assert d.metric("blockd_store_healthy") == 0.0
            assert d.metric("blockd_store_listening") == 0.0
            # a second daemon (another worker, a restart) starts from its own snapshot
            (config.parent / "state" / "dns.snapshot").rename(
                config.parent / "state" / "late.snapshot")
            late_config = config.parent / "late.toml"
            late_config.write_text(config.read_text())
            snapshot.write_bytes((config.parent / "state" / "late.snapshot").read_bytes())
            late = start_daemon(db, late_config, "--metrics", "127.0.0.1:0")  # type: ignore[arg-type]
            assert all(late.is_blocked(n) for n in BLOCKED)
            assert late.wait_health("snapshot").startswith("store unreadable")
            # the CLI says so in one line; a daemon with no snapshot refuses to start
            r = run_cli(config, db, "status")
            assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
            assert "cannot connect" in r.stderr
            bare = config.parent / "bare.toml"
            bare.write_text(config.read_text().replace(
                str(config.parent / "state"), str(config.parent / "empty-state")))
            r = subprocess.run([sys.executable, "-m", "blockd", "serve", "dns", "--db", db,
                                "--listen", "127.0.0.1:0"], capture_output=True, text=True,
                               env={**os.environ, "BLOCKD_CONFIG": str(bare)}, timeout=60,
                               check=False)
            assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
            assert "no usable snapshot" in r.stderr or "no snapshot" in r.stderr
            # and without a state directory at all: refused before anything is opened
            none = config.parent / "none.toml"
            none.write_text(config.read_text().replace(
                f'state_dir = "{config.parent / "state"}"\n', ""))
            r = subprocess.run([sys.executable, "-m", "blockd", "serve", "dns", "--db", db,
                                "--listen", "127.0.0.1:0"], capture_output=True, text=True,
                               env={**os.environ, "BLOCKD_CONFIG": str(none)}, timeout=60,
                               check=False)
            assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
            assert "store.state_dir: must be set" in r.stderr
        finally:
            pg_server.start()
        for daemon in (d, late):
            assert daemon is not None
            daemon.wait_health("ok", limit=10.0)
        deadline = time.monotonic() + 10
        while d.metric("blockd_store_listening") != 1.0:  # the LISTEN is back too
            assert time.monotonic() < deadline, "no LISTEN after the server came back"
            time.sleep(0.05)
        r = run_cli(config, db, "order", "add", "BACK-1", "--authority", "Court",
                    "--issued", "2026-01-01", "back.example")
        assert r.returncode == 0, r.stderr
        d.blocked_within("back.example", True, limit=5.0)
        assert late is not None
        late.blocked_within("back.example", True, limit=5.0)
    finally:
        stop_daemon(d)
        if late is not None:
            stop_daemon(late)


def test_a_recreated_database_is_refused_until_adopted(
        site: tuple[Path, str], pg_server: PgServer) -> None:
    """PostgreSQL's replaced file: the database dropped and created again with another
    history. The daemon keeps its policy and names both heads; `store adopt` lets it
    follow the new store."""
    config, db = site
    name = db.rsplit("/", 1)[1]
    snapshot = config.parent / "state" / "dns.snapshot"
    d = start_daemon(db, config, "--metrics", "127.0.0.1:0")  # type: ignore[arg-type]
    try:
        wait_snapshot(snapshot, head_of(db))
        pg_server.drop_database(name)
        with pg_server.admin() as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0 STRATEGY FILE_COPY")
        assert run_cli(config, db, "init").returncode == 0
        r = run_cli(config, db, "order", "add", "OTHER-1", "--authority", "Court",
                    "--issued", "2026-01-01", "other.example")
        assert r.returncode == 0, r.stderr
        text = d.wait_health("store refused")
        assert "does not continue" in text
        assert all(d.is_blocked(n) for n in BLOCKED)
        assert not d.is_blocked("other.example")
        r = run_cli(config, db, "store", "adopt", "--reason", "re-created", "--yes")
        assert r.returncode == 0, r.stderr
        d.wait_health("ok")
        d.blocked_within("other.example", True, limit=5.0)
        assert not d.is_blocked("allofmp3.com")
    finally:
        stop_daemon(d)


# -- migrate, and the SQLite-only commands ------------------------------------------


def test_migrate_from_sqlite_copies_everything_and_proves_it(
        tmp_path: Path, pg_url: str, blockd: Runner) -> None:
    """orders, targets, journal, hits, enforcements and verify runs arrive unchanged;
    `audit verify` passes on the copy, which takes new writes; a non-empty destination
    and bad input are refused in one line naming the option, changing nothing."""
    from blockd.core.hits import HitBucket

    src = str(tmp_path / "src.db")
    assert blockd("init", "--db", src).code == 0
    assert blockd("order", "add", "FI-15124/2006", "--authority", "Copenhagen City Court",
                  "--issued", "2006-10-25", "--policy", "dk", *BLOCKED, "--db", src).code == 0
    assert blockd("order", "add", "UK-1", "--authority", "High Court", "--issued",
                  "2014-10-17", "--policy", "uk", "=exact.example", "45.33.32.0/24",
                  "--db", src).code == 0
    assert blockd("order", "suspend", "UK-1", "--reason", "appeal", "--db", src).code == 0
    s = Store.open(src)
    day = date(2026, 1, 5)
    s.add_hits([HitBucket(day, "FI-15124/2006", "allofmp3.com", "dns", 7, None),
                HitBucket(day, "FI-15124/2006", "allofmp3.com", "http", 2, None)])
    head = s.head()
    assert head is not None
    s.record_enforcements([(1, "dns", "dns", NOW)])
    s.record_verify(NOW, head, 3, 0, False, {"orders": {"FI-15124/2006": [3, 0]}})
    s.close()

    r = blockd("store", "migrate", "--from", src, "--to", pg_url)
    assert r.code == 0, r.err
    assert f"journal seq {head.seq}" in r.out and "proven" in r.out
    assert blockd("audit", "verify", "--db", pg_url).code == 0
    a, b = Store.open(src), Store.open(pg_url)
    try:
        assert a.journal() == b.journal()
        assert a.stats() == b.stats()
        assert sorted(a.load_orders(), key=lambda o: o[0].reference) == \
            sorted(b.load_orders(), key=lambda o: o[0].reference)
        assert a.hits() == b.hits()
        assert a.enforcements([1]) == b.enforcements([1])
        assert a.last_verify() == b.last_verify()
        b.add_order(order("NEW-1"), [parse_target("new.example")], actor="t", at=NOW)
        assert b.verify() == []
    finally:
        a.close()
        b.close()

    back = str(tmp_path / "back.db")  # and back to SQLite, the new order with it
    r = blockd("store", "migrate", "--from", pg_url, "--to", back)
    assert r.code == 0, r.err
    assert blockd("audit", "verify", "--db", back).code == 0
    assert blockd("check", "new.example", "--db", back).code == 0

    again = blockd("store", "migrate", "--from", src, "--to", pg_url)
    assert again.code == 2 and again.err.count("\n") == 1
    assert "--to:" in again.err and "not empty" in again.err
    for args, field in [(("--from", "", "--to", pg_url), "--from"),
                        (("--from", str(tmp_path / "none.db"), "--to", pg_url), "--from"),
                        (("--from", src, "--to", src), "--to"),
                        (("--from", src, "--to", "postgresql://blockd@127.0.0.1:1/x"),
                         "--to")]:
        r = blockd("store", "migrate", *args)
        assert r.code == 2 and r.err.startswith(f"blockd: error: {field}:"), (args, r.err)
        assert r.err.count("\n") == 1
    assert not (tmp_path / "none.db").exists()
    check = Store.open(pg_url)
    try:
        assert check.stats()["journal_entries"] == head.seq + 1  # nothing else changed
    finally:
        check.close()


def test_sqlite_only_commands_say_what_to_use(tmp_path: Path, pg_url: str,
                                              blockd: Runner) -> None:
    """backup/restore refuse PostgreSQL with one line naming pg_dump; `store check` and
    `status` skip the SQLite page check and prove the journal."""
    assert blockd("init", "--db", pg_url).code == 0
    assert blockd("order", "add", "A-1", "--authority", "Court", "--issued", "2026-01-01",
                  "a.example", "--db", pg_url).code == 0
    for args in (("store", "backup", str(tmp_path / "b.db")),
                 ("store", "restore", str(tmp_path / "b.db"), "--yes")):
        r = blockd(*args, "--db", pg_url)
        assert r.code == 2 and r.err.count("\n") == 1 and "pg_dump" in r.err, r.err
    assert not (tmp_path / "b.db").exists()
    r = blockd("store", "check", "--db", pg_url)
    assert r.code == 0 and "intact" in r.out, r.err
    r = blockd("status", "--db", pg_url)
    assert r.code == 0 and "1 in force" in r.out, r.err
    with_password = pg_url.replace("blockd@", "blockd:s3cret@")
    for args in (("status",), ("config", "show"), ("config", "show", "--json")):
        r = blockd(*args, "--db", with_password)
        assert r.code == 0 and "s3cret" not in r.out + r.err, r
    assert blockd("audit", "verify", "--db", pg_url).code == 0
