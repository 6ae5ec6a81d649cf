"""Keep a daemon's block index current: load once, then follow the journal and the clock.

Shared by every daemon (DNS, notice server, nftables). The daemon reads ``follower.index``
(an immutable snapshot) on its hot path; this module swaps in a new snapshot when the
journal grows or an order enters or leaves force. Builds run in a worker thread so the
event loop keeps answering from the last good index. If the store cannot be read, the
last good index stays in force (fail closed) and ``healthy`` turns false until it recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from blockd.core.index import BlockIndex, IndexBuilder
from blockd.core.journal import JournalEntry
from blockd.core.model import Action, BlockdError
from blockd.store.shared import SharedStore

log = logging.getLogger("blockd.follow")

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class FollowStats:
    """Figures a daemon exports as metrics."""

    loads: int = 0
    entries_applied: int = 0
    store_errors: int = 0
    last_success: float = 0.0
    last_error: str | None = None
    swaps: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class IndexFollower:
    """Owns an IndexBuilder and publishes snapshots of it.

    ``actions`` maps enforcement policy names to DNS actions. Listeners are called on the
    event loop after every swap (e.g. to clear caches). The daemon core calls
    :meth:`poll` on a timer; nothing here owns a task.
    """

    def __init__(
        self, store: SharedStore, actions: Mapping[str, Action], *, clock: Clock = utcnow,
    ) -> None:
        self.store = store
        self.actions = dict(actions)
        self.clock = clock
        self.stats = FollowStats()
        self.readable = False  # the store answered at the last poll
        self.unproven: list[str] = []  # what the journal did not prove at the last load
        self._reload_requested = False
        self._work = threading.RLock()  # the worker-thread steps: one at a time
        self._builder: IndexBuilder | None = None
        self._index: BlockIndex | None = None
        self._last_hash: str | None = None
        self._listeners: list[Callable[[BlockIndex], None]] = []
        self._actions_changed = False

    @property
    def healthy(self) -> bool:
        """The store is readable and its tables are what its journal proves."""
        return self.readable and not self.unproven

    def request_reload(self) -> None:
        """Load (and verify) everything again at the next poll (SIGHUP)."""
        self._reload_requested = True

    @property
    def index(self) -> BlockIndex:
        if self._index is None:
            raise RuntimeError("index not loaded yet: await start() first")
        return self._index

    def set_actions(self, actions: Mapping[str, Action]) -> None:
        """New DNS actions per policy name (SIGHUP): in force from the next poll."""
        self.actions = dict(actions)
        self._actions_changed = True

    def on_swap(self, listener: Callable[[BlockIndex], None]) -> None:
        self._listeners.append(listener)

    # -- lifecycle -----------------------------------------------------------------

    async def load(self) -> None:
        """Load the full index (raises if the store cannot be read at start-up)."""
        self._swap(await asyncio.to_thread(self._load))
        self.readable = True
        self.stats.last_success = time.time()

    async def poll(self) -> bool:
        """One round: apply new journal entries and clock transitions. True if swapped."""
        try:
            fresh = await asyncio.to_thread(self._step)
        except (BlockdError, OSError, Exception) as exc:
            self.stats.store_errors += 1
            message = f"{type(exc).__name__}: {exc}"
            if self.readable or self.stats.last_error != message:
                log.error("order store unreadable, keeping last good policy (seq %s): %s",
                          self._index.seq if self._index else "-", message)
            self.stats.last_error = message
            self.readable = False
            self.store.drop()  # reopen next time (the file may have been replaced)
            return False
        if not self.readable:
            log.info("order store readable again (journal seq %s)", self.index.seq)
        self.readable = True
        self.stats.last_success = time.time()
        if fresh is not None:
            self._swap(fresh)
        return fresh is not None

    # -- work (in a worker thread) ---------------------------------------------

    async def verify(self) -> None:
        """Prove the tables the index was loaded from against the journal (in a worker
        thread; seconds at a million targets, so the daemon serves meanwhile). If they
        differ, the index is rebuilt from the journal alone: a row added or deleted
        behind the journal's back is neither enforced nor lost, and the follower reports
        itself unhealthy until the tables match again."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[BlockIndex | None] = loop.create_future()

        def settle(result: BlockIndex | None, error: BaseException | None) -> None:
            if done.done():
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(result)

        def work() -> None:
            try:
                result, error = self._verify(), None
            except Exception as exc:
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop may be gone: stopped meanwhile
                loop.call_soon_threadsafe(settle, result, error)

        # a daemon thread, not the default executor: stopping must not wait for a proof
        # that takes seconds at a million targets
        threading.Thread(target=work, name="blockd-verify", daemon=True).start()
        try:
            fresh = await done
        except Exception as exc:  # unreadable now: the next poll says so
            log.warning("order tables not verified against the journal: %s", exc)
            return
        if fresh is not None:
            self._swap(fresh)

    def _load(self) -> BlockIndex:
        """The whole index from the tables (the fast way; :meth:`verify` proves them)."""
        store = self.store.get()
        self._reload_requested = False
        builder = IndexBuilder(self.clock(), self.actions)
        heads: list[JournalEntry | None] = []
        for order, rows in store.load_rows(heads.append):
            builder.load_rows(order, rows)
        head = heads[0] if heads else store.head()
        builder.book.seq = head.seq if head else 0
        self._last_hash = head.hash if head else None
        self._builder = builder
        self.stats.loads += 1
        index = builder.index()
        log.info("index loaded: journal seq %s, %s entries in force", index.seq, index.size)
        return index

    def _verify(self) -> BlockIndex | None:
        """Runs in a worker thread: a new index from the journal alone when the tables
        are not what it proves, else None."""
        with self._work:
            return self._verify_locked()

    def _verify_locked(self) -> BlockIndex | None:
        store = self.store.get()
        problems = store.verify()
        self.unproven = problems
        if not problems:
            return None
        log.error("the order tables do not match the journal (%d problem(s), first: %s); "
                  "enforcing what the journal proves", len(problems), problems[0])
        builder = IndexBuilder(self.clock(), self.actions)
        entries = store.journal()
        for entry in entries:
            builder.apply(entry)
        self._last_hash = entries[-1].hash if entries else None
        self._builder = builder
        return builder.index()

    def _step(self) -> BlockIndex | None:
        """Runs in a worker thread; returns a new snapshot when something changed."""
        with self._work:
            return self._step_locked()

    def _step_locked(self) -> BlockIndex | None:
        store = self.store.get()
        builder = self._builder
        if builder is None or self._reload_requested:
            loaded = self._load()
            return self._verify() or loaded
        head = store.head()
        changed = False
        if (head.seq if head else 0) < builder.book.seq:
            log.warning("journal went backwards (store replaced?); reloading")
            return self._load()
        if head is not None and head.seq > builder.book.seq:
            entries = store.journal(builder.book.seq)
            if entries and entries[0].prev_hash != (self._last_hash or entries[0].prev_hash):
                log.warning("journal does not continue from seq %s; reloading",
                            builder.book.seq)
                return self._load()
            for entry in entries:
                builder.apply(entry)
                self._last_hash = entry.hash
            self.stats.entries_applied += len(entries)
            changed = bool(entries)
        if self._actions_changed:
            self._actions_changed = False
            builder.set_actions(self.actions)
            changed = True
        if builder.advance(self.clock()) or changed:
            return builder.index()
        return None

    def _swap(self, index: BlockIndex) -> None:
        """On the event loop: publish the snapshot, then let listeners drop caches."""
        self._index = index
        self.stats.swaps += 1
        for listener in self._listeners:
            try:
                listener(self.index)
            except Exception:  # a broken listener must not stop enforcement
                log.exception("policy listener failed")
