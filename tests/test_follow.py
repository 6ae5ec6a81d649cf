"""Following the journal on a real SQLite file: changes, clock transitions, fail-closed."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from blockd.core.model import OrderRecord, Status
from blockd.core.names import parse_target
from blockd.store.follow import IndexFollower
from blockd.store.shared import SharedStore
from blockd.store.store import Store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def order(ref: str, **kw: object) -> OrderRecord:
    return OrderRecord(reference=ref, authority="Court", issued_on=date(2026, 2, 1),
                       received_at=T0, **kw)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(str(tmp_path / "f.db"), create=True)
    s.init()
    return s


def test_follows_changes_and_time(store: Store) -> None:
    clock = FakeClock()
    store.add_order(order("A", effective_until=T0 + timedelta(minutes=10)),
                    [parse_target("allofmp3.com")], actor="t", at=T0)

    async def scenario() -> None:
        f = IndexFollower(SharedStore(str(store.path)), {}, clock=clock)
        swaps: list[int] = []
        f.on_swap(lambda p: swaps.append(p.seq))
        await f.load()
        try:
            assert f.index.decide("www.allofmp3.com").blocked
            store.add_targets("A", [parse_target("mp3sparks.com")], actor="t", at=T0)
            assert await f.poll()
            assert f.index.decide("mp3sparks.com").blocked
            store.set_status("A", Status.SUSPENDED, "appeal", actor="t", at=T0)
            assert await f.poll()
            assert not f.index.decide("allofmp3.com").blocked
            store.set_status("A", Status.ACTIVE, "appeal dismissed", actor="t", at=T0)
            await f.poll()
            assert f.index.decide("allofmp3.com").blocked
            assert not await f.poll()  # nothing new
            clock.now = T0 + timedelta(minutes=10)  # the sunset passes: no command needed
            assert await f.poll()
            assert not f.index.decide("allofmp3.com").blocked
            assert swaps == [1, 2, 3, 4, 4]
            assert f.stats.loads == 1 and f.healthy
        finally:
            f.store.close()

    asyncio.run(scenario())


def test_keeps_last_good_policy_when_store_is_unreadable(store: Store) -> None:
    store.add_order(order("A"), [parse_target("allofmp3.com")], actor="t", at=T0)
    assert store.path is not None
    path = store.path
    store.close()

    async def scenario() -> None:
        f = IndexFollower(SharedStore(str(path)), {}, clock=FakeClock())
        await f.load()
        try:
            good = path.read_bytes()
            path.write_bytes(b"garbage" * 4096)  # the store becomes unreadable
            wal = path.with_name(path.name + "-wal")
            if wal.exists():
                wal.unlink()
            f.store.drop()  # as after a restart of the connection pool
            assert not await f.poll()
            assert not f.healthy and f.stats.store_errors == 1
            assert f.index.decide("allofmp3.com").blocked  # still enforcing
            path.write_bytes(good)
            await f.poll()
            assert f.healthy
            assert f.index.decide("allofmp3.com").blocked
        finally:
            f.store.close()

    asyncio.run(scenario())


def test_reloads_when_the_store_is_restored_from_another_history(
    tmp_path: Path, store: Store
) -> None:
    """A restore replaces the journal: the follower notices the chain break and reloads."""
    store.add_order(order("A"), [parse_target("a.example")], actor="t", at=T0)

    async def scenario() -> None:
        f = IndexFollower(SharedStore(str(store.path)), {}, clock=FakeClock())
        await f.load()
        try:
            other = Store.open(str(tmp_path / "other.db"), create=True)
            other.init()
            other.add_order(order("B"), [parse_target("b.example")], actor="t", at=T0)
            other.add_order(order("C"), [parse_target("c.example")], actor="t", at=T0)
            other.close()
            src = sqlite3.connect(tmp_path / "other.db")
            dst = sqlite3.connect(str(store.path))
            src.backup(dst)  # SQLite's online backup: safe with readers attached
            src.close()
            dst.close()
            assert await f.poll(), f.stats
            assert f.stats.loads == 2
            assert f.index.decide("b.example").blocked
            assert not f.index.decide("a.example").blocked
        finally:
            f.store.close()

    asyncio.run(scenario())
