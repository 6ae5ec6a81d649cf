"""Schema upgrades from a real v1 store, made by blockd 0.1 (tests/data/store-v1.sql).

The v1 store was written through the CLI of the v1 code: three orders, guard overrides
on an order and on a later target addition (a public-suffix host name, a public resolver
address, another resolver address), a lifted order and a removed target.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Runner, db_digest
from sqlalchemy import Connection

from blockd.store import migrations
from blockd.store.engine import StoreSchemaError
from blockd.store.store import Store

V1 = Path(__file__).parent / "data" / "store-v1.sql"
FORCED_IN_V1 = {"1.1.1.1", "8.8.8.8", "blogspot.com"}  # what v1's journal scan found


def v1_store(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.executescript(V1.read_text(encoding="utf-8"))
    con.close()
    return path


def rows(path: Path, query: str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


ORDERS_AND_TARGETS = ("SELECT o.reference, o.status, t.kind, t.value, t.match, t.added_seq "
                      "FROM targets t JOIN orders o ON o.id = t.order_id ORDER BY 1, 4")


def test_a_v1_store_is_upgraded_by_init(blockd: Runner, db: Path) -> None:
    v1_store(db)
    before = rows(db, ORDERS_AND_TARGETS)
    journal = rows(db, "SELECT * FROM journal ORDER BY seq")
    with pytest.raises(StoreSchemaError, match=r"schema v1, this blockd uses v3; run `blockd"):
        Store.open(str(db))
    r = blockd("status")
    assert r.code == 2 and "run `blockd init` to upgrade" in r.err
    r = blockd("init", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["schema"] == 3 and json.loads(r.out)["state"] == "upgraded"
    assert rows(db, ORDERS_AND_TARGETS) == before  # no order or target changed
    assert rows(db, "SELECT * FROM journal ORDER BY seq") == journal  # nor the record
    store = Store.open(str(db))
    try:
        assert store.schema_version() == 3
        assert store.forced_targets() == FORCED_IN_V1
        assert store.verify() == []
    finally:
        store.close()
    assert blockd("audit", "verify").code == 0
    again = blockd("init", "--json")
    assert json.loads(again.out)["state"] == "up to date"


def test_a_failed_upgrade_leaves_the_v1_store_as_it_was(
        db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v1_store(db)
    digest = db_digest(db)
    real: Callable[[Connection], None] = migrations.STEPS[1]

    def half_done(conn: Connection) -> None:
        real(conn)  # the column and the flags are written...
        raise RuntimeError("power cut")  # ...and then the step fails

    monkeypatch.setitem(migrations.STEPS, 1, half_done)
    store = Store.open(str(db), create=True)
    with pytest.raises(RuntimeError, match="power cut"):
        store.init()
    store.close()
    assert db_digest(db) == digest  # one transaction: nothing of the step remains
    assert "forced" not in {r[1] for r in rows(db, "PRAGMA table_info(targets)")}
    monkeypatch.setitem(migrations.STEPS, 1, real)
    store = Store.open(str(db), create=True)
    assert store.init() == (1, 3)
    store.close()


def test_audit_catches_a_forced_flag_edited_in_the_table(blockd: Runner, db: Path) -> None:
    v1_store(db)
    assert blockd("init").code == 0
    con = sqlite3.connect(db)
    con.execute("UPDATE targets SET forced = true WHERE value = 'mp3-clone.example'")
    con.execute("UPDATE targets SET forced = false WHERE value = 'blogspot.com'")
    con.commit()
    con.close()
    r = blockd("audit", "verify")
    assert r.code == 1
    assert ("order DK-2025-7: target mp3-clone.example is marked forced past the guard, "
            "but no journal entry forced it") in r.out
    assert ("order DK-2025-7: target blogspot.com was forced in journal entry 2, but the "
            "table does not say so") in r.out


def test_new_overrides_are_recorded_as_columns(blockd: Runner, db: Path) -> None:
    """Only the targets the guard refused are flagged, not the rest of a forced command."""
    assert blockd("init").code == 0
    r = blockd("order", "add", "UK-1", "--authority", "High Court", "--issued", "2025-01-01",
               "github.io", "counterfeit.example", "--force", "--justification",
               "the order names the host platform")
    assert r.code == 0, r.err
    assert blockd("order", "target", "add", "UK-1", "9.9.9.9", "--force",
                  "--justification", "listed in the schedule").code == 0
    flags = {(v, f) for v, f in rows(db, "SELECT value, forced FROM targets")}
    assert flags == {("github.io", 1), ("counterfeit.example", 0), ("9.9.9.9", 1)}
    store = Store.open(str(db))
    try:
        assert store.forced_targets() == {"github.io", "9.9.9.9"}
        assert store.verify() == []
    finally:
        store.close()


def test_the_kernel_s_forced_list_is_one_indexed_query(blockd: Runner, db: Path) -> None:
    assert blockd("init").code == 0
    plan = rows(db, "EXPLAIN QUERY PLAN SELECT kind, value, match FROM targets "
                    "WHERE forced IS 1")
    assert "USING INDEX ix_targets_forced" in str(plan)
    from sqlalchemy.dialects import sqlite
    from sqlmodel import col, select

    from blockd.store.tables import TargetRow
    sql = str(select(col(TargetRow.value)).where(col(TargetRow.forced).is_(True)).compile(
        dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    assert sql.endswith("WHERE targets.forced IS 1")  # the form forced_targets() sends


def test_hits_counted_before_channels_are_kept_under_any(blockd: Runner, db: Path) -> None:
    """v2 counted every channel into one row per (day, order, target): the upgrade keeps
    those counts under channel ``any`` and sums them into the per-order rollup."""
    v1_store(db)
    con = sqlite3.connect(db)
    con.executemany("INSERT INTO hits (day, reference, target, count) VALUES (?, ?, ?, ?)",
                    [("2025-03-01", "DK-2025-7", "mp3-clone.example", 5),
                     ("2025-03-01", "DK-2025-7", "allofmp3.com", 2),
                     ("2025-03-02", "DK-2025-7", "allofmp3.com", 1)])
    con.commit()
    con.close()
    assert blockd("init").code == 0
    assert rows(db, "SELECT day, target, channel, count, clients FROM hits ORDER BY 1, 2") == [
        ("2025-03-01", "allofmp3.com", "any", 2, None),
        ("2025-03-01", "mp3-clone.example", "any", 5, None),
        ("2025-03-02", "allofmp3.com", "any", 1, None)]
    assert rows(db, "SELECT day, reference, channel, count FROM hit_orders ORDER BY 1") == [
        ("2025-03-01", "DK-2025-7", "any", 7), ("2025-03-02", "DK-2025-7", "any", 1)]
    r = blockd("hits", "--order", "DK-2025-7", "--since", "2025-01-01", "--json")
    assert r.code == 0, r.err
    assert {row["order"]: row["hits"] for row in json.loads(r.out)["rows"]} == {"DK-2025-7": 8}
