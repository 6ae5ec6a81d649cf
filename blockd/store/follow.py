"""Keep a daemon's block index current: load once, then follow the journal and the clock.

Shared by every daemon (DNS, notice server, nftables). The daemon reads ``follower.index``
(an immutable snapshot) on its hot path; this module swaps in a new snapshot when the
journal grows or an order enters or leaves force. Builds run in a worker thread so the
event loop keeps answering from the last good index. If the store cannot be read, the
last good index stays in force (fail closed) and ``healthy`` turns false until it recovers.

The follower never follows a store backwards: a journal that is shorter than, or forks
from, the one already applied (a store replaced by ``rm`` + ``init``, an old backup copied
over it) is refused until a ``store.adopt`` entry in it names the head this daemon stands
on. The last good policy is also kept on disk (:mod:`blockd.store.snapshot`), so a daemon
whose store is unreadable or refused at start serves from it instead of not at all.
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
from pathlib import Path
from typing import Any

from blockd.core.index import BlockIndex, IndexBuilder
from blockd.core.journal import JournalEntry
from blockd.core.model import Action, BlockdError
from blockd.store.engine import StoreDiverged, StoreError
from blockd.store.shared import SharedStore
from blockd.store.snapshot import SnapshotError, load_snapshot, read_head, write_snapshot

JOURNAL_PAGE = 8  # journal entries read at once while following

log = logging.getLogger("blockd.follow")

COMPLAIN_EVERY = 60.0  # seconds between repeats of the same "unhealthy" log line

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
    snapshots_written: int = 0
    snapshot_failures: int = 0
    integrity_checks: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class IndexFollower:
    """Owns an IndexBuilder and publishes snapshots of it.

    ``actions`` maps enforcement policy names to DNS actions. Listeners are called on the
    event loop after every swap (e.g. to clear caches). The daemon core calls
    :meth:`poll` on a timer; nothing here owns a task.
    """

    def __init__(
        self, store: SharedStore, actions: Mapping[str, Action], *, clock: Clock = utcnow,
        snapshot: Path | None = None, instance: str = "blockd",
        policies: Mapping[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.actions = dict(actions)
        self.clock = clock
        self.snapshot = snapshot  # this instance's snapshot file (None: keep none)
        self.instance = instance
        self.policies: Mapping[str, Any] = policies or {}  # recorded in the snapshot
        self.stats = FollowStats()
        self.readable = False  # the store answered at the last poll
        self.unproven: list[str] = []  # what the journal did not prove at the last load
        self.refused: str | None = None  # why the store's journal is not followed
        self.damaged: list[str] = []  # what the last integrity check found
        self.origin = "store"  # or "snapshot": the index came from the file on disk
        self._saved: tuple[int, str | None, int] | None = None  # (seq, hash, builder id)
        self._complained: tuple[str, float] = ("", 0.0)
        self._reload_requested = False
        self._work = threading.RLock()  # the worker-thread steps: one at a time
        self._builder: IndexBuilder | None = None
        self._index: BlockIndex | None = None
        self._latest: BlockIndex | None = None  # the newest index built (under _work)
        self._last_hash: str | None = None
        self._listeners: list[Callable[[BlockIndex], None]] = []
        self._actions_changed = False

    @property
    def healthy(self) -> bool:
        """The store is readable, intact, continues what is enforced, and its tables are
        what its journal proves."""
        return self.problem is None

    @property
    def problem(self) -> str | None:
        """Why the follower is unhealthy, in one line (None when healthy)."""
        if self.refused:
            return f"store refused: {self.refused}"
        source = "the snapshot on disk" if self.origin == "snapshot" else "memory"
        damage = f"store damaged: {self.damaged[0]}" if self.damaged else None
        if not self.readable:  # and say what the integrity check found, when it did
            unreadable = f"store unreadable: enforcing the last good policy from {source}"
            return unreadable if damage is None else f"{unreadable}; {damage}"
        if damage is not None:
            return damage
        if self.unproven:
            return "order tables do not match the journal: enforcing what it proves"
        return None

    def request_reload(self) -> None:
        """Load (and verify) everything again at the next poll (SIGHUP)."""
        self._reload_requested = True

    @property
    def index(self) -> BlockIndex:
        if self._index is None:
            raise RuntimeError("index not loaded yet: await start() first")
        return self._index

    @property
    def head_hash(self) -> str | None:
        """The hash of the journal entry the index in force stands on (None: empty)."""
        return self._last_hash

    def set_actions(self, actions: Mapping[str, Action]) -> None:
        """New DNS actions per policy name (SIGHUP): in force from the next poll."""
        self.actions = dict(actions)
        self._actions_changed = True

    def on_swap(self, listener: Callable[[BlockIndex], None]) -> None:
        self._listeners.append(listener)

    # -- lifecycle -----------------------------------------------------------------

    async def load(self) -> None:
        """Load the full index from the store; if the store cannot be read or does not
        continue what this daemon enforced, from the snapshot on disk (unhealthy until the
        store is back). Raises BlockdError, one line, when neither can be used."""
        try:
            index = await asyncio.to_thread(self._load_accepted)
        except (BlockdError, OSError) as exc:
            index = await asyncio.to_thread(self._load_snapshot, exc)
        else:
            self.readable = True
            self.stats.last_success = time.time()
        self._swap(index)

    def _load_accepted(self) -> BlockIndex:
        with self._work:
            store = self.store.get()
            head = read_head(self.snapshot) if self.snapshot is not None else None
            if head is not None and not store.continues(*head):
                raise StoreDiverged(self._diverged(store.head(), *head))
            return self._load()

    def _load_snapshot(self, cause: BaseException) -> BlockIndex:
        """Runs in a worker thread at start when the store cannot be used."""
        if isinstance(cause, StoreDiverged):
            self.refused, self.readable = str(cause), True
        if self.snapshot is None:
            raise BlockdError(f"cannot start: {cause}") from None
        try:
            builder, info = load_snapshot(self.snapshot, self.clock(), self.actions)
        except SnapshotError as exc:
            raise BlockdError(f"cannot start: {cause}; and no usable snapshot of the last "
                              f"good policy ({exc})") from None
        with self._work:
            self._builder = builder
            self._last_hash = info.hash
            self.origin = "snapshot"
            self._saved = (info.seq, info.hash, id(builder))  # nothing new to write
            index = self._built(builder)
        self._complain(f"order store not used ({cause}); serving the last good policy from "
                       f"{self.snapshot} (journal seq {info.seq}, written {info.written_at})")
        return index

    async def poll(self) -> bool:
        """One round: apply new journal entries and clock transitions. True if swapped."""
        try:
            fresh = await asyncio.to_thread(self._step)
        except StoreDiverged as exc:
            self.stats.store_errors += 1
            self.stats.last_error = str(exc)
            self.readable, self.refused = True, str(exc)
            self._complain(f"order store refused: {exc}")
            return await self._tick()
        except (BlockdError, OSError, Exception) as exc:
            self.stats.store_errors += 1
            message = f"{type(exc).__name__}: {exc}"
            self.stats.last_error = message
            self.readable = False
            self._complain("order store unreadable, keeping last good policy (seq "
                           f"{self._index.seq if self._index else '-'}): {message}")
            self.store.drop()  # reopen next time (the file may have been replaced)
            return await self._tick()
        if not self.readable or self.refused:
            log.info("order store in use again (journal seq %s)",
                     fresh.seq if fresh is not None else self.index.seq)
        self.readable, self.refused = True, None
        self._complained = ("", 0.0)
        self.stats.last_success = time.time()
        if fresh is not None:
            self._swap(fresh)
        return fresh is not None

    async def _tick(self) -> bool:
        """Without the store, orders still enter and leave force by the clock."""
        def work() -> BlockIndex | None:
            with self._work:
                builder = self._builder
                return self._built(builder) if builder and builder.advance(self.clock()) \
                    else None

        fresh = await asyncio.to_thread(work)
        if fresh is not None:
            self._swap(fresh)
        return fresh is not None

    def _complain(self, message: str) -> None:
        """Log an unhealthy state: at once when it changes, then once a minute."""
        last, when = self._complained
        now = time.monotonic()
        if message != last or now - when >= COMPLAIN_EVERY:
            log.error("%s", message)
            self._complained = (message, now)

    async def check(self, budget: float = 10.0) -> None:
        """The store's integrity check (``PRAGMA quick_check``, at most ``budget``
        seconds, in a worker thread): damage found makes the follower unhealthy."""
        def work() -> list[str] | None:
            try:
                return self.store.get().quick_check(budget)
            except StoreError as exc:
                return [str(exc)]

        found = await asyncio.to_thread(work)
        self.stats.integrity_checks += 1
        if found is None:
            log.warning("store integrity check did not finish in %.0f s", budget)
            return
        if found and found != self.damaged:
            log.error("order store damaged (%s); enforcing the last good policy. "
                      "Restore a backup: blockd store restore FILE", "; ".join(found[:3]))
        elif not found and self.damaged:
            log.info("order store passes its integrity check again")
        self.damaged = found

    async def save_snapshot(self) -> bool:
        """Write the policy in force to disk if it changed since the last write (in a
        worker thread). Only a policy from a healthy store is written: the file is what
        a restart falls back on. True if written."""
        if self.snapshot is None or self.origin != "store" or not self.readable \
                or self.refused or self._builder is None:
            return False
        try:
            return await asyncio.to_thread(self._save)
        except OSError as exc:
            self.stats.snapshot_failures += 1
            self._complain(f"snapshot of the policy not written to {self.snapshot}: {exc}")
            return False

    def _save(self) -> bool:
        with self._work:
            builder = self._builder
            if builder is None or self.snapshot is None:
                return False
            key = (builder.book.seq, self._last_hash, id(builder))
            if key == self._saved:
                return False
            book = builder.book
            write_snapshot(
                self.snapshot, instance=self.instance, seq=book.seq, head_hash=self._last_hash,
                orders=((o, book.targets.get(ref, ())) for ref, o in book.orders.items()),
                policies=self.policies)
            self._saved = key
        self.stats.snapshots_written += 1
        return True

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
        started = time.monotonic()
        threading.Thread(target=work, name="blockd-verify", daemon=True).start()
        try:
            fresh = await done
        except Exception as exc:  # unreadable now: the next poll says so
            log.warning("order tables not verified against the journal: %s", exc)
            return
        if fresh is not None:
            self._swap(fresh)
        log.info("order tables proven against the journal: seconds=%.1f problems=%d",
                 time.monotonic() - started, len(self.unproven))

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
        self.origin = "store"
        self.stats.loads += 1
        index = self._built(builder)
        log.info("index loaded: journal seq %s, %s entries in force", index.seq, index.size)
        return index

    def _verify(self) -> BlockIndex | None:
        """Runs in a worker thread: a new index from the journal alone when the tables
        are not what it proves, else None.

        The proof itself (the replay of the whole journal and the comparison with the
        tables: tens of seconds at a million targets on a loaded machine) runs without
        ``_work``, so the follower keeps applying journal entries meanwhile; a change
        made during the proof used to wait for it. That is safe because the proof only
        reads, and everything it leads to happens under ``_work``: when it finds a
        difference, the index is rebuilt from the whole journal as it is *then* (so
        entries applied meanwhile are in it, and it is never older than the builder it
        replaces), and :meth:`_swap` installs only the newest index built, so a proof
        finishing after a newer poll cannot put an older policy back in force."""
        problems = self.store.get().verify()
        with self._work:
            return self._verify_locked(problems)

    def _verify_locked(self, problems: list[str]) -> BlockIndex | None:
        self.unproven = problems
        if not problems:
            return None
        store = self.store.get()
        log.error("the order tables do not match the journal (%d problem(s), first: %s); "
                  "enforcing what the journal proves", len(problems), problems[0])
        builder = IndexBuilder(self.clock(), self.actions)
        entries = store.journal()
        for entry in entries:
            builder.apply(entry)
        self._last_hash = entries[-1].hash if entries else None
        self._builder = builder
        return self._built(builder)

    def _step(self) -> BlockIndex | None:
        """Runs in a worker thread; returns a new snapshot when something changed."""
        with self._work:
            return self._step_locked()

    def _step_locked(self) -> BlockIndex | None:
        store = self.store.get()
        builder = self._builder
        if builder is not None and (
                self.origin == "snapshot" or self.refused or self._reload_requested):
            if not store.continues(builder.book.seq, self._last_hash):
                raise StoreDiverged(self._diverged(store.head(), builder.book.seq,
                                                   self._last_hash))
            builder = None  # the store is back (or adopted, or SIGHUP): load it whole
        if builder is None:
            loaded = self._load()
            return self._verify() or loaded
        head = store.head()
        changed = False
        mine = builder.book.seq
        theirs = (head.seq, head.hash) if head else (0, None)
        if theirs != (mine, self._last_hash) and not (
                theirs[0] > mine and store.holds(mine, self._last_hash)):
            if not store.continues(mine, self._last_hash):
                raise StoreDiverged(self._diverged(head, mine, self._last_hash))
            log.warning("order store adopted in place of journal seq %s; loading it", mine)
            loaded = self._load()
            return self._verify() or loaded
        while head is not None and head.seq > builder.book.seq:
            # a page at a time: an import of a million is a hundred entries of 10,000
            # targets, and holding them all at once was the follower's peak memory
            entries = store.journal(builder.book.seq, limit=JOURNAL_PAGE)
            for entry in entries:
                builder.apply(entry)
                self._last_hash = entry.hash
            self.stats.entries_applied += len(entries)
            changed = changed or bool(entries)
            if len(entries) < JOURNAL_PAGE:
                break
        if self._actions_changed:
            self._actions_changed = False
            builder.set_actions(self.actions)
            changed = True
        if builder.advance(self.clock()) or changed:
            return self._built(builder)
        return None

    @staticmethod
    def _diverged(head: JournalEntry | None, seq: int, head_hash: str | None) -> str:
        theirs = f"seq {head.seq} ({head.hash[:16]})" if head else "seq 0 (empty journal)"
        return (f"its journal (head {theirs}) does not continue the one enforced here "
                f"(seq {seq} ({(head_hash or '-')[:16]})); keeping the policy in force. "
                "To adopt this store: blockd store adopt")

    def _built(self, builder: IndexBuilder) -> BlockIndex:
        """An index of ``builder``, noted as the newest (called holding ``_work``)."""
        index = self._latest = builder.index()
        return index

    def _swap(self, index: BlockIndex) -> None:
        """On the event loop: publish the snapshot, then let listeners drop caches.

        Only the newest index built is published: the worker threads' results reach the
        loop in any order (a proof's rebuild may arrive after a poll that came later),
        and every index built is handed here by the step that built it, so skipping an
        older one never leaves the newest unpublished."""
        if index is not self._latest:
            log.debug("an older index arrived after a newer one: not published")
            return
        self._index = index
        self.stats.swaps += 1
        for listener in self._listeners:
            try:
                listener(self.index)
            except Exception:  # a broken listener must not stop enforcement
                log.exception("policy listener failed")
