"""The quick commands' LiteStore against Store on the same real SQLite files: the same
answers to every read it offers, the same rows from its one write, the same typed errors."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockd.core.hits import HitBucket, HitQuery
from blockd.core.model import InputError, OrderRecord, Status
from blockd.core.names import parse_target
from blockd.core.sketch import Sketch
from blockd.store.engine import StoreDamaged, StoreLocked, StoreMissing, StoreSchemaError
from blockd.store.lite import LiteStore, open_quick
from blockd.store.records import Forced
from blockd.store.store import Store

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SUBJECTS = ["allofmp3.com", "www.allofmp3.com", "a.b.mirror.example", "mirror.example",
            "only.example", "x.only.example", "sub.wild.example", "wild.example",
            "45.33.32.9", "45.33.33.1", "2001:db8::1", "198.51.100.7", "free.example",
            "later.example", "ended.example", "paused.example"]


def order(ref: str, **kw: object) -> OrderRecord:
    fields: dict[str, object] = {"reference": ref, "authority": "Court",
                                 "issued_on": date(2026, 1, 5), "received_at": NOW, **kw}
    return OrderRecord(**fields)  # type: ignore[arg-type]


def targets(*specs: str) -> list:  # type: ignore[type-arg]
    return [parse_target(s) for s in specs]


@pytest.fixture
def both(tmp_path: Path) -> tuple[Store, LiteStore]:
    """A store with orders of every status and window, address targets, hits, a timeline
    and an adoption; the same file opened both ways."""
    db = tmp_path / "b.db"
    s = Store.open(str(db), create=True)
    s.init()
    s.add_order(order("DK-1", jurisdiction="DK", policy="dk", notice="Ordered 2006"),
                targets("allofmp3.com", "=only.example", "*.wild.example", "45.33.32.0/24",
                        "2001:db8::/48"), actor="t", at=NOW)
    s.add_order(order("M-2", effective_until=NOW + timedelta(days=30)),
                targets("mirror.example", "198.51.100.7"), actor="t", at=NOW)
    s.add_order(order("L-3", effective_from=NOW + timedelta(days=400)),
                targets("later.example"), actor="t", at=NOW)
    s.add_order(order("E-4", effective_until=NOW + timedelta(hours=1)),
                targets("ended.example"), actor="t", at=NOW)
    s.add_order(order("P-5"), targets("paused.example", "allofmp3.com"), actor="t", at=NOW)
    s.set_status("P-5", Status.SUSPENDED, "appeal", actor="t", at=NOW)
    s.add_order(order("X-6"), targets("gone.example"), actor="t", at=NOW)
    s.set_status("X-6", Status.LIFTED, "overturned", actor="t", at=NOW)
    s.add_order(order("EMPTY-7"), [], actor="t", at=NOW)
    s.adopt([(3, "f" * 64)], reason="restored", actor="t", at=NOW)
    sketch = Sketch()
    for i in range(40):
        sketch.add(i * 2654435761)
    s.add_hits([HitBucket(date(2026, 2, d), "DK-1", "allofmp3.com", ch, 10 * d,
                          sketch.encode()) for d in (1, 2, 27, 28) for ch in ("dns", "http")])
    s.record_enforcements([(1, "dns", "dns", NOW + timedelta(seconds=2)),
                           (1, "http", "http", NOW + timedelta(seconds=3))])
    lite = LiteStore.open(db)
    yield s, lite
    lite.close()
    s.close()


def test_every_read_answers_as_store_does(both: tuple[Store, LiteStore]) -> None:
    s, lite = both
    assert lite.schema_version() == s.schema_version()
    assert lite.head() == s.head()
    assert lite.stats() == s.stats()
    for status in (None, *Status):
        assert lite.list_orders(status) == s.list_orders(status)
    for ref in ("DK-1", "M-2", "L-3", "P-5", "X-6", "EMPTY-7"):
        assert lite.get_order(ref) == s.get_order(ref)
        assert lite.get_order(ref, with_targets=False) == s.get_order(ref, with_targets=False)
        for limit in (0, 1, 3):
            assert lite.some_targets(ref, limit) == s.some_targets(ref, limit)
        assert lite.journal(reference=ref) == s.journal(reference=ref)
    assert lite.journal() == s.journal()
    for subject in SUBJECTS:
        target = parse_target(subject)
        assert sorted(lite.candidates(target), key=repr) == \
            sorted(s.candidates(target), key=repr), subject
    assert [(o, list(r)) for o, r in lite.load_rows()] == \
        [(o, list(r)) for o, r in s.load_rows()]
    seqs = [e.seq for e in s.journal()]
    assert lite.enforcements(seqs) == s.enforcements(seqs) and lite.enforcements([]) == []
    for head in s.journal():
        assert lite.continues(head.seq, head.hash) is s.continues(head.seq, head.hash) is True
    assert lite.continues(3, "f" * 64) is s.continues(3, "f" * 64) is True  # adopted
    assert lite.continues(3, "e" * 64) is s.continues(3, "e" * 64) is False
    assert lite.continues(0, None) and lite.continues(99, "a" * 64) is False
    for query in (HitQuery(reference="DK-1"), HitQuery(reference="DK-1", since=date(2026, 2, 2)),
                  HitQuery(reference="DK-1", since=date(2026, 2, 1), until=date(2026, 2, 27)),
                  HitQuery(by="day"), HitQuery(by="channel"), HitQuery(by="target")):
        for top in (None, 1):  # sketches compare by what they estimate
            mine, theirs = lite.hit_summary(query, top), s.hit_summary(query, top)
            assert mine.as_dict(query.by) == theirs.as_dict(query.by), query
            assert mine.clients == theirs.clients and mine.sketches == theirs.sketches
    assert lite.quick_check() == s.quick_check() == []
    with pytest.raises(InputError, match="no order 'NOPE'"):
        lite.get_order("NOPE")


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["allofmp3.com", "new.example", "=exact.example",
                                 "*.wild2.example", "10.9.8.0/24", "2001:db8:5::1",
                                 "new.example", "xn--bcher-kva.example"]), min_size=1,
                max_size=6),
       st.booleans(), st.sampled_from(["DK-1", "M-2", "X-6", "EMPTY-7", "NOPE"]))
def test_the_write_leaves_the_rows_store_leaves(both: tuple[Store, LiteStore], specs: list[str],
                                                force: bool, ref: str) -> None:
    s, _ = both
    assert s.path is not None
    twin = s.path.with_name(f"twin-{abs(hash((tuple(specs), force, ref)))}.db")
    _copy(s.path, twin)
    parsed = targets(*specs)
    forced = Forced("court says so", (f"{parsed[0].spec}: a shared host",),
                    frozenset(parsed[:1])) if force else None
    kw = {"actor": "eng", "at": NOW + timedelta(minutes=5), "forced": forced,
          "collateral": ("cdn.example",) if force else ()}
    via_store = via_lite = None
    try:
        via_store = s.add_targets(ref, parsed, **kw)  # type: ignore[arg-type]
    except InputError as exc:
        via_store = str(exc)
    other = LiteStore.open(twin)
    try:
        via_lite = other.add_targets(ref, parsed, **kw)  # type: ignore[arg-type]
    except InputError as exc:
        via_lite = str(exc)
    finally:
        other.close()
    assert via_lite == via_store
    assert _rows(twin) == _rows(s.path)
    twin.unlink()
    store_twin = Store.open(str(s.path))
    assert store_twin.verify() == []
    store_twin.close()


def _copy(src: Path, dst: Path) -> None:
    """A consistent copy, WAL included (SQLite's backup API)."""
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        a.backup(b)
    finally:
        a.close()
        b.close()


def _rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    con = sqlite3.connect(path)
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
                for t in ("journal", "orders", "targets")}
    finally:
        con.close()


def test_a_large_add_is_chunked_as_store_chunks_it(tmp_path: Path) -> None:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    s = Store.open(str(a), create=True)
    s.init()
    s.add_order(order("BIG"), [], actor="t", at=NOW)
    _copy(a, b)
    many = targets(*(f"n{i}.example" for i in range(12_500)))
    s.add_targets("BIG", many, actor="t", at=NOW)
    lite = LiteStore.open(b)
    added, already = lite.add_targets("BIG", many, actor="t", at=NOW)
    assert len(added) == 12_500 and not already
    assert lite.add_targets("BIG", many[:3], actor="t", at=NOW) == ([], many[:3])
    lite.close()
    assert _rows(a) == _rows(b)
    assert len(_rows(b)["journal"]) == 3  # the order, then 10,000 + 2,500 targets
    s.close()


def test_errors_are_the_store_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(StoreMissing, match=r"no database at .*blockd init"):
        LiteStore.open(tmp_path / "none.db")
    assert not (tmp_path / "none.db").exists()
    sqlite3.connect(tmp_path / "empty.db").close()
    with pytest.raises(StoreSchemaError, match="not initialised"):
        LiteStore.open(tmp_path / "empty.db")
    s = Store.open(str(tmp_path / "new.db"), create=True)
    s.init()
    s.add_order(order("L"), [], actor="t", at=NOW)
    s.close()
    con = sqlite3.connect(tmp_path / "new.db", isolation_level=None)
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreSchemaError, match="newer than this blockd"):
        LiteStore.open(tmp_path / "new.db")
    con.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreDamaged, match=r"not a blockd database or is damaged"):
        LiteStore.open(tmp_path / "junk.db")
    import blockd.store.lite as mod

    monkeypatch.setattr(mod, "BUSY_TIMEOUT_MS", 200)
    lite = LiteStore.open(tmp_path / "new.db")
    con.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreLocked, match="locked by another process"):
            lite.add_targets("L", targets("a.example"), actor="t", at=NOW)
    finally:
        con.execute("ROLLBACK")
    assert lite.add_targets("L", targets("a.example"), actor="t", at=NOW)[0]
    lite.close()
    con.close()


def test_only_plain_sqlite_files_take_the_quick_path(tmp_path: Path) -> None:
    s = Store.open(str(tmp_path / "b.db"), create=True)
    s.init()
    s.close()
    quick = open_quick(str(tmp_path / "b.db"))
    assert isinstance(quick, LiteStore)
    quick.close()
    quick = open_quick(f"sqlite:///{tmp_path / 'b.db'}")
    assert isinstance(quick, LiteStore)
    quick.close()
    assert open_quick(f"sqlite:///file:{tmp_path / 'b.db'}?mode=ro&uri=true") is None
    assert open_quick("postgresql://blockd@127.0.0.1/blockd") is None
    assert open_quick("sqlite://") is None
