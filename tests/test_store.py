"""The store on a real SQLite file and a real PostgreSQL server: schema versions, WAL,
locking, atomic writes, typed errors."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from blockd.core.index import IndexBuilder
from blockd.core.model import InputError, OrderRecord, Status
from blockd.core.names import parse_target
from blockd.store.engine import (
    StoreDamaged,
    StoreFull,
    StoreLocked,
    StoreMissing,
    StoreReadOnly,
    StoreReplaced,
    StoreSchemaError,
)
from blockd.store.store import Store
from blockd.store.tables import SCHEMA_VERSION

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def order(ref: str = "R-1") -> OrderRecord:
    return OrderRecord(reference=ref, authority="Court", issued_on=date(2025, 12, 1),
                       received_at=NOW)


@pytest.fixture
def store(store_db: str) -> Iterator[Store]:
    """An initialised store: SQLite, then PostgreSQL."""
    s = Store.open(store_db, create=True)
    s.init()
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Store:
    s = Store.open(str(tmp_path / "b.db"), create=True)
    s.init()
    return s


def test_init_is_idempotent_and_versioned(tmp_path: Path) -> None:
    s = Store.open(str(tmp_path / "sub" / "b.db"), create=True)
    assert s.init() == (0, SCHEMA_VERSION)
    assert s.init() == (SCHEMA_VERSION, SCHEMA_VERSION)
    con = sqlite3.connect(tmp_path / "sub" / "b.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_missing_uninitialised_and_newer_schema_are_clear(tmp_path: Path) -> None:
    with pytest.raises(StoreMissing, match=r"no database at .*blockd init"):
        Store.open(str(tmp_path / "none.db"))
    assert not (tmp_path / "none.db").exists()
    sqlite3.connect(tmp_path / "empty.db").close()
    with pytest.raises(StoreSchemaError, match="not initialised"):
        Store.open(str(tmp_path / "empty.db"))
    s = Store.open(str(tmp_path / "new.db"), create=True)
    s.init()
    con = sqlite3.connect(tmp_path / "new.db")
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.commit()
    with pytest.raises(StoreSchemaError, match="newer than this blockd"):
        Store.open(str(tmp_path / "new.db"))
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreDamaged, match=r"not a blockd database or is damaged"):
        Store.open(str(tmp_path / "junk.db"))


def _read_only(path: Path) -> str:
    """A URL SQLite opens read-only (chmod does not stop root)."""
    return f"sqlite:///file:{path}?mode=ro&uri=true"


@pytest.mark.parametrize("cause", ["read-only", "full", "cannot open"])
def test_driver_errors_are_typed_by_code_not_text(tmp_path: Path, cause: str) -> None:
    """The cause comes from SQLite's result code: each is its own StoreError type."""
    db = tmp_path / "b.db"
    s = Store.open(str(db), create=True)
    s.init()
    s.close()
    if cause == "read-only":
        ro = Store.open(_read_only(db))
        assert ro.path == db  # the file behind the URI, probed like any other
        with pytest.raises(StoreReadOnly, match="read-only for this user"):
            ro.add_order(order("RO-1"), [], actor="t", at=NOW)
        ro.close()
    elif cause == "full":
        full = Store.open(str(db))
        with full.engine.connect() as c:  # a page limit: SQLITE_FULL on the next write
            pages = c.exec_driver_sql("PRAGMA page_count").scalar()
        from sqlalchemy import event

        @event.listens_for(full.engine, "connect")
        def limit(dbapi: Any, _r: Any) -> None:
            dbapi.execute(f"PRAGMA max_page_count = {pages}")

        full.engine.dispose()
        with pytest.raises(StoreFull):
            full.add_order(order("F-1"), [parse_target(f"n{i}.example") for i in range(5000)],
                           actor="t", at=NOW)
        full.close()
    else:
        (tmp_path / "dir.db").mkdir()
        with pytest.raises(StoreMissing):
            Store.open(str(tmp_path / "dir.db"))
    check = Store.open(str(db))
    assert check.stats()["journal_entries"] == 0  # nothing half-written
    check.close()


def test_probe_names_a_replaced_or_damaged_file(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    s = Store.open(str(db), create=True)
    s.init()
    s.probe()
    other = Store.open(str(tmp_path / "other.db"), create=True)
    other.init()
    other.close()
    (tmp_path / "other.db").rename(db)  # a restore by mv: another inode under the name
    with pytest.raises(StoreReplaced, match="was replaced"):
        s.probe()
    db.unlink()
    with pytest.raises(StoreMissing):
        s.probe()
    s.close()


def test_failed_write_changes_nothing(store: Store) -> None:
    store.add_order(order(), [parse_target("a.example")], actor="t", at=NOW)
    head = store.head()
    with pytest.raises(InputError, match="already exists"):
        store.add_order(order(), [parse_target("b.example")], actor="t", at=NOW)
    with pytest.raises(InputError, match="not on order"):
        store.remove_targets("R-1", [parse_target("a.example"), parse_target("zz.example")],
                             actor="t", at=NOW)
    assert store.head() == head
    assert {t.spec for t in store.get_order("R-1").targets} == {"a.example"}


def test_lifted_is_final(store: Store) -> None:
    store.add_order(order(), [], actor="t", at=NOW)
    store.set_status("R-1", Status.LIFTED, "discharged", actor="t", at=NOW)
    with pytest.raises(InputError, match="cannot resume order R-1: it is lifted"):
        store.set_status("R-1", Status.ACTIVE, "x", actor="t", at=NOW)
    with pytest.raises(InputError, match="lifted; it takes no targets"):
        store.add_targets("R-1", [parse_target("a.example")], actor="t", at=NOW)


def test_large_order_is_chunked_in_the_journal(store: Store) -> None:
    targets = [parse_target(f"site{i}.example") for i in range(25_000)]
    entries = store.add_order(order(), targets, actor="t", at=NOW)
    assert [e.action for e in entries] == ["order.add", "target.add", "target.add"]
    assert store.count_targets("R-1") == 25_000
    assert store.verify() == []


def test_store_compile_equals_journal_replay(store: Store) -> None:
    store.add_order(order("A"), [parse_target(t) for t in ("a.example", "=b.example",
                    "*.c.example", "45.33.32.0/24", "2a01:4f8::/48")], actor="t", at=NOW)
    store.add_order(order("B"), [parse_target("d.example")], actor="t", at=NOW)
    store.set_status("B", Status.SUSPENDED, "appeal", actor="t", at=NOW)
    store.remove_targets("A", [parse_target("=b.example")], actor="t", at=NOW)
    scratch = IndexBuilder(NOW)
    for rec, rows in store.load_rows():
        scratch.load_rows(rec, rows)
    replay = IndexBuilder(NOW)
    for entry in store.journal():
        replay.apply(entry)
    assert scratch.index().snapshot() == replay.index().snapshot()
    assert {t for _, t in scratch.index().snapshot()} == {
        "a.example", "*.c.example", "45.33.32.0/24", "2a01:4f8::/48"}


def test_readers_see_committed_state_while_a_writer_holds_the_lock(
    sqlite_store: Store, tmp_path: Path
) -> None:
    sqlite_store.add_order(order(), [parse_target("a.example")], actor="t", at=NOW)
    con = sqlite3.connect(tmp_path / "b.db", isolation_level=None)
    con.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    con.execute("DELETE FROM targets")
    reader = Store.open(str(tmp_path / "b.db"))
    assert reader.count_targets("R-1") == 1  # WAL: readers are not blocked
    con.execute("ROLLBACK")


def test_locked_database_gives_a_clear_error(sqlite_store: Store, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import blockd.store.engine as mod

    monkeypatch.setattr(mod, "BUSY_TIMEOUT_MS", 200)
    locked = Store.open(str(tmp_path / "b.db"))
    con = sqlite3.connect(tmp_path / "b.db", isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreLocked, match="locked by another process"):
            locked.add_order(order("L"), [], actor="t", at=NOW)
    finally:
        con.execute("ROLLBACK")
    locked.add_order(order("L"), [], actor="t", at=NOW)


def test_concurrent_writers_keep_the_chain(store_db: str) -> None:
    """Two writers racing: sequence numbers stay gapless and the chain verifies."""
    path = store_db
    first = Store.open(path, create=True)
    first.init()
    first.close()
    errors: list[BaseException] = []

    def writer(prefix: str) -> None:
        s = Store.open(path)
        try:
            for i in range(15):
                s.add_order(order(f"{prefix}{i}"), [parse_target(f"{prefix}{i}.example")],
                            actor=prefix, at=NOW)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=writer, args=(p,)) for p in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    s = Store.open(path)
    assert [e.seq for e in s.journal()] == list(range(1, 31))
    assert s.verify() == []
    s.close()


def test_hits_add_sum_merge_and_prune_alike(store: Store) -> None:
    """Counts add up, sketches merge, month and day totals follow, and retention deletes
    by each order's policy, journaled once: the same on both databases (their SQL
    differs: LEAST/GREATEST, DATE columns)."""
    from datetime import timedelta

    from blockd.core.hits import HitBucket, HitQuery
    from blockd.core.sketch import Sketch

    def sketch(*values: int) -> bytes:
        s = Sketch()
        for v in values:
            s.add(int.from_bytes(hashlib.blake2b(v.to_bytes(8, "big")).digest()[:8], "big"))
        return s.encode()

    store.add_order(order("A"), [parse_target("a.example")], actor="t", at=NOW)
    store.add_order(replace(order("B"), policy="uk"), [parse_target("b.example")],
                    actor="t", at=NOW)
    start = date(2026, 1, 25)
    days = [start + timedelta(days=d) for d in range(0, 20, 3)]  # over a month end
    for ref in ("A", "B"):
        store.add_hits([HitBucket(d, ref, f"{ref.lower()}.example", "dns", 2, sketch(1, 2))
                        for d in days])
    store.add_hits([HitBucket(days[0], "A", "a.example", "dns", 5, sketch(3)),
                    HitBucket(days[0], "A", "a.example", "http", 1, None)])
    summary = store.hit_summary(HitQuery())
    assert [(g.key, g.hits, g.first, g.last) for g in summary.groups] == [
        ("A", 2 * len(days) + 6, days[0], days[-1]), ("B", 2 * len(days), days[0], days[-1])]
    by_day = store.hit_summary(HitQuery(by="day", reference="A", since=days[0],
                                        until=days[0]))
    assert [(g.key, g.hits, g.clients) for g in by_day.groups] == [
        (days[0].isoformat(), 8, 3)]
    cutoff = days[3]  # B's policy keeps from days[3]; every other order only days[5] on
    entry = store.prune_hits({"uk": cutoff}, days[5], actor="t", at=NOW)
    assert entry is not None and entry.data["buckets"] == 5 + 3 + 1
    assert {(r, d) for d, r, _, _ in store.hits()} == \
        {("A", d) for d in days[5:]} | {("B", d) for d in days[3:]}
    after = store.hit_summary(HitQuery(since=start, until=days[-1]))
    assert [(g.key, g.hits, g.first) for g in after.groups] == [
        ("B", 2 * len(days[3:]), days[3]), ("A", 2 * len(days[5:]), days[5])]
    assert store.prune_hits({"uk": cutoff}, days[5], actor="t", at=NOW) is None
    assert store.verify() == []


WRITER = """
import sys
from datetime import UTC, date, datetime
from blockd.core.model import OrderRecord
from blockd.core.names import parse_target
from blockd.store.store import Store
now = datetime(2026, 1, 1, tzinfo=UTC)
w = Store.open(sys.argv[1])
for i in range(int(sys.argv[2])):
    w.add_order(OrderRecord(reference=f"W-{i}", authority="Court",
                            issued_on=date(2025, 12, 1), received_at=now),
                [parse_target(f"w{i}.example")], actor="w", at=now)
w.close()
"""


def test_verify_is_not_fooled_by_a_concurrent_writer(store: Store) -> None:
    """The journal and the tables are read apart; a write landing between the two must
    not be reported as the tables disagreeing with the journal (on a store shared by
    appliances, another machine writes at any time)."""
    import subprocess
    import sys

    store.add_order(order("BASE"), [parse_target("base.example")], actor="t", at=NOW)
    writes = 150
    writer = subprocess.Popen([sys.executable, "-c", WRITER, store.db, str(writes)],
                              stderr=subprocess.PIPE, text=True)
    found: list[list[str]] = []
    try:
        while writer.poll() is None:
            found.append(store.verify())
    finally:
        _, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    assert len(store.journal()) == writes + 1 and len(found) > 5
    assert [p for p in found if p] == []
