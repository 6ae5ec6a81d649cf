"""Following the journal on a real SQLite file (and PostgreSQL where the store, not the
file, is under test): changes, clock transitions, fail-closed."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from blockd.core.model import BlockdError, OrderRecord, Status
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


@pytest.fixture
def any_store(store_db: str) -> Iterator[Store]:
    s = Store.open(store_db, create=True)
    s.init()
    yield s
    s.close()


def test_follows_changes_and_time(any_store: Store) -> None:
    store = any_store
    clock = FakeClock()
    store.add_order(order("A", effective_until=T0 + timedelta(minutes=10)),
                    [parse_target("allofmp3.com")], actor="t", at=T0)

    async def scenario() -> None:
        f = IndexFollower(SharedStore(store.db), {}, clock=clock)
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


def copy_into(src_path: Path, dst_path: Path) -> None:
    """SQLite's online backup of one file into another: safe with readers attached."""
    src = sqlite3.connect(src_path)
    dst = sqlite3.connect(dst_path)
    src.backup(dst)
    src.close()
    dst.close()


def other_history(tmp_path: Path) -> Path:
    other = Store.open(str(tmp_path / "other.db"), create=True)
    other.init()
    other.add_order(order("B"), [parse_target("b.example")], actor="t", at=T0)
    other.add_order(order("C"), [parse_target("c.example")], actor="t", at=T0)
    other.close()
    return tmp_path / "other.db"


def test_refuses_a_store_from_another_history_until_adopted(
    tmp_path: Path, store: Store
) -> None:
    """A restore replaces the journal: the follower keeps what it enforces, names both
    heads, and loads the new store only once a store.adopt entry names its head."""
    first = store.add_order(order("A"), [parse_target("a.example")], actor="t", at=T0)[-1]

    async def scenario() -> None:
        f = IndexFollower(SharedStore(str(store.path)), {}, clock=FakeClock())
        await f.load()
        try:
            copy_into(other_history(tmp_path), store.path)
            assert not await f.poll()
            assert not f.healthy and f.refused is not None
            assert f"seq 1 ({first.hash[:16]})" in f.refused  # the head enforced here
            assert "head seq 2 (" in f.refused  # and the store's
            assert f.index.decide("a.example").blocked  # still enforcing
            assert not f.index.decide("b.example").blocked
            f.request_reload()  # SIGHUP does not bypass the refusal
            assert not await f.poll() and f.refused
            assert f.index.decide("a.example").blocked
            Store.open(str(store.path)).adopt([(9, "f" * 64)], reason="other", actor="t",
                                              at=T0)
            assert not await f.poll() and f.refused  # names another head: still refused
            Store.open(str(store.path)).adopt([(first.seq, first.hash)], reason="restore",
                                              actor="t", at=T0)
            assert await f.poll(), f.stats
            assert f.healthy and f.refused is None
            assert f.index.decide("b.example").blocked
            assert not f.index.decide("a.example").blocked
        finally:
            f.store.close()

    asyncio.run(scenario())


def test_refuses_a_shorter_journal(tmp_path: Path, store: Store) -> None:
    """An older backup of the same store: the journal went backwards."""
    store.add_order(order("A"), [parse_target("a.example")], actor="t", at=T0)
    copy_into(store.path, tmp_path / "backup.db")
    store.add_order(order("B"), [parse_target("b.example")], actor="t", at=T0)

    async def scenario() -> None:
        f = IndexFollower(SharedStore(str(store.path)), {}, clock=FakeClock())
        await f.load()
        try:
            copy_into(tmp_path / "backup.db", store.path)
            assert not await f.poll()
            assert f.refused and "head seq 1 (" in f.refused and "(seq 2 (" in f.refused
            assert f.index.decide("b.example").blocked
        finally:
            f.store.close()

    asyncio.run(scenario())


def test_snapshot_carries_the_policy_across_a_lost_store(tmp_path: Path, store: Store) -> None:
    """Written after a change; a follower that cannot read the store starts from it,
    unhealthy, orders still end by the clock; with no snapshot it refuses to start."""
    store.add_order(order("A"), [parse_target("a.example"), parse_target("=exact.example"),
                                 parse_target("*.wild.example"), parse_target("192.0.2.0/24")],
                    actor="t", at=T0)
    store.add_order(order("T", effective_until=T0 + timedelta(minutes=5)),
                    [parse_target("timed.example")], actor="t", at=T0)
    store.add_order(order("L"), [parse_target("lifted.example")], actor="t", at=T0)
    store.set_status("L", Status.LIFTED, "appeal", actor="t", at=T0)
    snap = tmp_path / "state" / "dns.snapshot"
    clock = FakeClock()

    async def scenario() -> None:
        f = IndexFollower(SharedStore(str(store.path)), {}, clock=clock, snapshot=snap)
        await f.load()
        assert await f.save_snapshot() and not await f.save_snapshot()  # only when behind
        store.add_targets("A", [parse_target("late.example")], actor="t", at=T0)
        assert await f.poll() and await f.save_snapshot()
        f.store.close()
        before = f.index.snapshot()

        store.path.write_bytes(b"garbage" * 4096)  # the store is gone
        g = IndexFollower(SharedStore(str(store.path)), {}, clock=clock, snapshot=snap)
        await g.load()
        try:
            assert g.origin == "snapshot" and not g.healthy
            assert g.problem and "snapshot" in g.problem
            assert g.index.snapshot() == before - {("L", "lifted.example")}
            for name in ("www.a.example", "exact.example", "x.wild.example", "late.example",
                         "timed.example"):
                assert g.index.decide(name).blocked, name
            assert not g.index.decide("www.exact.example").blocked
            assert g.index.decide("192.0.2.77").blocked
            assert not await g.save_snapshot()  # never overwrites the file it came from
            clock.now = T0 + timedelta(minutes=6)
            assert await g.poll()  # unreadable, but the clock still ends order T
            assert not g.healthy
            assert not g.index.decide("timed.example").blocked
            assert g.index.decide("a.example").blocked
        finally:
            g.store.close()

        snap.unlink()
        h = IndexFollower(SharedStore(str(store.path)), {}, clock=clock, snapshot=snap)
        with pytest.raises(BlockdError, match=r"cannot start: .*no usable snapshot"):
            await h.load()
        h.store.close()

    asyncio.run(scenario())


def test_a_torn_snapshot_is_refused(tmp_path: Path, store: Store) -> None:
    store.add_order(order("A"), [parse_target("a.example")], actor="t", at=T0)
    snap = tmp_path / "dns.snapshot"

    async def scenario() -> None:
        f = IndexFollower(SharedStore(str(store.path)), {}, clock=FakeClock(), snapshot=snap)
        await f.load()
        await f.save_snapshot()
        f.store.close()
        text = snap.read_text()
        snap.write_text(text.replace("a.example", "b.example"))
        store.path.unlink()
        g = IndexFollower(SharedStore(str(store.path)), {}, clock=FakeClock(), snapshot=snap)
        with pytest.raises(BlockdError, match="digest does not match"):
            await g.load()
        snap.write_text(text[: len(text) // 2])
        with pytest.raises(BlockdError, match=r"truncated|damaged"):
            await g.load()
        g.store.close()

    asyncio.run(scenario())


def test_integrity_check_sees_damaged_pages(tmp_path: Path, store: Store) -> None:
    """Garbage in pages 2-10 with the header intact: the daemon's reads of the journal
    head may still work, the integrity check does not."""
    store.add_order(order("A"), [parse_target(f"n{i}.example") for i in range(3000)],
                    actor="t", at=T0)
    store.close()
    with sqlite3.connect(store.path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def scenario() -> None:
        f = IndexFollower(SharedStore(str(store.path)), {}, clock=FakeClock())
        await f.load()
        try:
            await f.check()
            assert f.healthy and f.stats.integrity_checks == 1
            with store.path.open("r+b") as fh:
                page = 4096
                fh.seek(page)
                fh.write(bytes(range(256)) * (9 * page // 256))
            await f.check()
            assert f.damaged and not f.healthy
            assert f.problem and f.problem.startswith("store damaged")
            assert f.index.decide("n5.example").blocked  # still enforcing
        finally:
            f.store.close()

    asyncio.run(scenario())


# -- following while the tables are proven ------------------------------------------------


class GatedStore(Store):
    """The real store; its proof (``verify``) starts only when the test opens the gate,
    so a test can act while the proof is under way without timing anything."""

    entered = threading.Event()
    gate = threading.Event()

    def verify(self) -> list[str]:
        GatedStore.entered.set()
        GatedStore.gate.wait()
        return super().verify()


class GatedShared(SharedStore):
    def get(self) -> Store:
        with self._lock:
            if self._store is None:
                self._store = GatedStore.open(self.db)
        return self._store


@pytest.fixture
def gated() -> Iterator[None]:
    GatedStore.entered.clear()
    GatedStore.gate.clear()
    yield
    GatedStore.gate.set()  # never leave a proof thread waiting


HANG_GUARD = 60.0  # seconds: not a figure, only so that a regression fails, not hangs


def test_the_journal_is_followed_while_the_tables_are_proven(store: Store,
                                                             gated: None) -> None:
    """A change made while the start-up proof runs is in force without waiting for it
    (it used to wait: the proof held the follower's lock; 19.7 s at 1M targets)."""
    store.add_order(order("A"), [parse_target("allofmp3.com")], actor="t", at=T0)

    async def scenario() -> None:
        f = IndexFollower(GatedShared(str(store.path)), {}, clock=FakeClock())
        await f.load()
        proof = asyncio.get_running_loop().create_task(f.verify())
        try:
            await asyncio.to_thread(GatedStore.entered.wait)
            store.add_targets("A", [parse_target("during.example")], actor="t", at=T0)
            assert await asyncio.wait_for(f.poll(), HANG_GUARD)
            assert f.index.decide("during.example").blocked and f.index.seq == 2
            assert not proof.done()  # the proof has not even started reading
            GatedStore.gate.set()
            await asyncio.wait_for(proof, HANG_GUARD)
            assert f.healthy and f.unproven == []
            assert f.index.decide("during.example").blocked and f.index.seq == 2
        finally:
            GatedStore.gate.set()
            await proof
            f.store.close()

    asyncio.run(scenario())


def test_tables_disproven_after_a_followed_change_lose_nothing(store: Store,
                                                               gated: None) -> None:
    """Tables edited behind the journal's back, a change followed during the proof: once
    the proof fails, the index is the journal's up to its head (the change included),
    and a proof result arriving after a newer index is not put back in force."""
    store.add_order(order("A"), [parse_target("allofmp3.com")], actor="t", at=T0)
    assert store.path is not None
    con = sqlite3.connect(store.path)
    con.execute("INSERT INTO targets (order_id, kind, value, match, added_seq, forced) "
                "VALUES (1, 'domain', 'smuggled.example', 'subtree', 1, false)")
    con.execute("DELETE FROM targets WHERE value = 'allofmp3.com'")
    con.commit()
    con.close()

    async def scenario() -> None:
        f = IndexFollower(GatedShared(str(store.path)), {}, clock=FakeClock())
        await f.load()  # from the tables: what the proof will refuse
        assert f.index.decide("smuggled.example").blocked
        assert not f.index.decide("allofmp3.com").blocked
        proof = asyncio.get_running_loop().create_task(f.verify())
        try:
            await asyncio.to_thread(GatedStore.entered.wait)
            store.add_targets("A", [parse_target("during.example")], actor="t", at=T0)
            assert await asyncio.wait_for(f.poll(), HANG_GUARD)
            GatedStore.gate.set()
            # let the proof's worker thread finish its rebuild, without letting the loop
            # publish it: then a newer index is built and published first
            while not f.unproven:
                time.sleep(0.01)
            with f._work:  # the rebuild holds it
                pass
            store.add_targets("A", [parse_target("later.example")], actor="t", at=T0)
            newer = f._step()
            assert newer is not None
            f._swap(newer)
            await asyncio.wait_for(proof, HANG_GUARD)
            assert f.index is newer and f.index.seq == 3  # the proof's older one skipped
            for name, blocked in (("allofmp3.com", True), ("during.example", True),
                                  ("later.example", True), ("smuggled.example", False)):
                assert f.index.decide(name).blocked is blocked, name
            assert not f.healthy
            assert any("smuggled.example" in p for p in f.unproven)
            store.add_targets("A", [parse_target("after.example")], actor="t", at=T0)
            assert await f.poll()  # and following goes on from the journal's builder
            assert f.index.decide("after.example").blocked
            assert not f.index.decide("smuggled.example").blocked
        finally:
            GatedStore.gate.set()
            await proof
            f.store.close()

    asyncio.run(scenario())
