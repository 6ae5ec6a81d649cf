"""The order's record over time: `check --at` replays the journal as it stood at an
instant, `order extend` and `order amend` change an order with a journaled reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import Runner, db_digest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockd.core.index import IndexBuilder
from blockd.core.model import OrderRecord, Status
from blockd.core.names import parse_target
from blockd.store.store import Store

DAY = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday


@pytest.fixture
def db(store_db: str) -> str:
    """This module's store: a SQLite file, then a PostgreSQL database (conftest's runner
    and db_digest take either)."""
    return store_db


def day(n: float, hour: int = 10) -> datetime:
    return DAY + timedelta(days=n, hours=hour - 10)


@pytest.fixture
def history(db: Path, blockd: Runner) -> list[int]:
    """A journal written over ten (simulated) days; the seq of each entry."""
    assert blockd("init").code == 0
    store = Store.open(str(db))
    seqs = []
    try:
        order = OrderRecord("DK-1", "Københavns Byret", day(-3).date(), day(0), policy="dk")
        seqs.append(store.add_order(order, [parse_target("allofmp3.com")], actor="t",
                                    at=day(0))[-1].seq)
        seqs.append(store.add_targets("DK-1", [parse_target("clone.example")], actor="t",
                                      at=day(2))[0] and store.head().seq)  # type: ignore[union-attr]
        seqs.append(store.set_status("DK-1", Status.SUSPENDED, "appeal", actor="t",
                                     at=day(4, 12)).seq)
        seqs.append(store.set_status("DK-1", Status.ACTIVE, "dismissed", actor="t",
                                     at=day(5, 9)).seq)
        seqs.append(store.remove_targets("DK-1", [parse_target("clone.example")], actor="t",
                                         at=day(7)) and store.head().seq)  # type: ignore[union-attr]
        seqs.append(store.amend("DK-1", {"effective_until": day(8, 18)}, "varied",
                                actor="t", at=day(8)).seq)
        seqs.append(store.amend("DK-1", {"effective_until": day(30)}, "extended",
                                actor="t", at=day(9, 8)).seq)
    finally:
        store.close()
    return seqs


@pytest.mark.parametrize(("name", "when", "blocked", "entry"), [
    ("allofmp3.com", day(-1), False, None),  # before any entry: nothing was enforced
    ("allofmp3.com", day(1), True, 0),
    ("clone.example", day(1), False, 0),  # added on day 2
    ("www.clone.example", day(3), True, 1),
    ("allofmp3.com", day(4, 13), False, 2),  # suspended at 12:00
    ("allofmp3.com", day(6), True, 3),
    ("clone.example", day(7, 11), False, 4),  # removed at 10:00
    ("allofmp3.com", day(8, 19), False, 5),  # the amended end passed at 18:00
    ("allofmp3.com", day(9, 9), True, 6),  # extended at 08:00 the next day
])
def test_check_at_replays_the_journal_as_it_stood(
        history: list[int], blockd: Runner, name: str, when: datetime, blocked: bool,
        entry: int | None) -> None:
    r = blockd("check", name, "--at", when.isoformat(), "--json")
    assert r.code == (0 if blocked else 1), r.err
    data = json.loads(r.out)
    assert data["blocked"] is blocked
    if entry is None:
        assert data["journal"] == {"seq": 0, "hash": None, "at": None}
    else:
        assert data["journal"]["seq"] == history[entry]
        log = json.loads(blockd("audit", "log", "--json").out)
        assert data["journal"]["hash"] == log[history[entry] - 1]["hash"]
    text = blockd("check", name, "--at", when.isoformat()).out
    assert ("BLOCKED" in text) is blocked
    assert (f"up to seq {history[entry]}" in text) if entry is not None else \
        "the journal holds no entry yet" in text


def test_an_order_added_today_was_not_blocked_in_the_past(db: Path, blockd: Runner) -> None:
    assert blockd("init").code == 0
    assert blockd("order", "add", "NEW-1", "--authority", "Court", "--issued",
                  datetime.now(UTC).date().isoformat(), "new.example").code == 0
    assert blockd("check", "new.example", "--at", "2020-01-01").code == 1
    assert blockd("check", "new.example").code == 0


def test_extend_and_amend_are_journaled_with_the_previous_values(
        db: Path, blockd: Runner) -> None:
    assert blockd("init").code == 0
    assert blockd("order", "add", "UK-1", "--authority", "High Court", "--issued",
                  "2026-01-05", "--policy", "uk", "--until", "2099-01-31",
                  "counterfeit.example").code == 0
    r = blockd("order", "extend", "UK-1", "--until", "2099-06-30", "--reason",
               "extended on 2099-01-20", "--json")
    assert r.code == 0, r.err
    done = json.loads(r.out)
    assert done["changes"] == {"effective_until": "2099-06-30T23:00:00Z"}  # end of day, BST
    assert done["previous"] == {"effective_until": "2099-02-01T00:00:00Z"}  # whole day
    r = blockd("order", "amend", "UK-1", "--authority", "High Court of Justice",
               "--contact", "abuse@isp.example", "--reason", "names corrected")
    assert r.code == 0, r.err
    show = json.loads(blockd("order", "show", "UK-1", "--json").out)
    assert show["authority"] == "High Court of Justice"
    assert show["contact"] == "abuse@isp.example"
    assert show["effective_until"] == "2099-06-30T23:00:00Z"
    assert [e["action"] for e in show["history"]] == ["order.add", "order.amend", "order.amend"]
    log = blockd("audit", "log").out
    assert ("authority: High Court -> High Court of Justice, contact: (none) -> "
            "abuse@isp.example (names corrected)") in log
    assert blockd("audit", "verify").code == 0


@pytest.mark.parametrize(("args", "field"), [
    (("order", "extend", "UK-1", "--until", "2099-01-30", "--reason", "x"), "--until"),
    (("order", "extend", "UK-1", "--until", "2020-01-01", "--reason", "x"), "--until"),
    (("order", "extend", "UK-1", "--until", "soon", "--reason", "x"), "--until"),
    (("order", "extend", "UK-1", "--until", "2099-06-30", "--reason", ""), "--reason"),
    (("order", "extend", "UK-1", "--until", "2099-06-30", "--reason", "a\nb"), "--reason"),
    (("order", "extend", "NOPE", "--until", "2099-06-30", "--reason", "x"), "reference"),
    (("order", "amend", "UK-1", "--reason", "x"), "amend"),
    (("order", "amend", "UK-1", "--authority", "", "--reason", "x"), "--authority"),
    (("order", "amend", "UK-1", "--authority", "High Court", "--reason", "x"), "--authority"),
    (("order", "amend", "UK-1", "--jurisdiction", "XX1", "--reason", "x"), "--jurisdiction"),
    (("order", "amend", "UK-1", "--until", "2001-01-01", "--reason", "x"), "--until"),
    (("order", "amend", "UK-1", "--appeal", "a\u202eb", "--reason", "x"), "--appeal"),
    (("order", "amend", "UK-1", "--until", "2099-02-01", "--reason", "\udcff"), "--reason"),
])
def test_bad_extend_and_amend_change_nothing(db: Path, blockd: Runner, args: tuple[str, ...],
                                             field: str) -> None:
    assert blockd("init").code == 0
    assert blockd("order", "add", "UK-1", "--authority", "High Court", "--issued",
                  "2026-01-05", "--policy", "uk", "--until", "2099-01-31", "c.example").code == 0
    before = db_digest(db)
    r = blockd(*args)
    assert r.code == 2
    assert r.err.startswith(f"blockd: error: {field}: ") and r.err.count("\n") == 1, r.err
    assert db_digest(db) == before


def test_a_lifted_order_cannot_be_extended(db: Path, blockd: Runner) -> None:
    assert blockd("init").code == 0
    assert blockd("order", "add", "UK-1", "--authority", "High Court", "--issued",
                  "2026-01-05", "c.example").code == 0
    assert blockd("order", "lift", "UK-1", "--reason", "discharged").code == 0
    before = db_digest(db)
    r = blockd("order", "extend", "UK-1", "--until", "2099-01-01", "--reason", "x")
    assert r.code == 2 and "is lifted" in r.err
    assert db_digest(db) == before


OPS = st.lists(st.tuples(
    st.sampled_from(["add", "remove", "suspend", "resume", "amend", "extend"]),
    st.sampled_from(["a.example", "b.example", "c.example"]),
    st.integers(min_value=1, max_value=30)), max_size=12)


@given(OPS)
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_replaying_the_whole_journal_gives_the_tables(tmp_path: Path, ops: list[
        tuple[str, str, int]]) -> None:
    """For any history, the journal replayed to now decides every name as the tables do."""
    path = tmp_path / f"p{abs(hash(tuple(ops)))}.db"
    store = Store.open(str(path), create=True)
    store.init()
    at = DAY
    try:
        store.add_order(OrderRecord("P-1", "Court", DAY.date(), DAY), [parse_target("a.example")],
                        actor="t", at=at)
        for op, name, hours in ops:
            at += timedelta(hours=hours)
            target = parse_target(name)
            try:
                if op == "add":
                    store.add_targets("P-1", [target], actor="t", at=at)
                elif op == "remove":
                    store.remove_targets("P-1", [target], actor="t", at=at)
                elif op in ("suspend", "resume"):
                    store.set_status("P-1", Status.SUSPENDED if op == "suspend"
                                     else Status.ACTIVE, op, actor="t", at=at)
                else:
                    store.amend("P-1", {"effective_until": at + timedelta(hours=hours * 2)},
                                op, actor="t", at=at)
            except Exception:  # refused (already there, not on it, same status): no entry
                continue
        for when in (at, at + timedelta(hours=40)):
            tables = IndexBuilder(when)
            for order, rows in store.load_rows():
                tables.load_rows(order, rows)
            journal = IndexBuilder(when)
            for entry in store.journal():
                journal.apply(entry)
            for name in ("a.example", "www.b.example", "c.example", "d.example"):
                assert tables.index().decide(name).blocked == \
                    journal.index().decide(name).blocked
        assert store.verify() == []
    finally:
        store.close()
