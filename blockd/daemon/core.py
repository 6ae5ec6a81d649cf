"""What every daemon stands on: configuration, enforcement policies, the live block index,
the hit counter, the shared store handle, metrics and the background loops behind them.

One :class:`Core` per process; the DNS, HTTP and nftables handles are built on it (in a
test, several on one core). It owns every background task, so stopping the core stops
them all and flushes the hits that were counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from blockd.config import Config, load_policies
from blockd.core.enforcement import Anonymisation, EnforcementPolicy
from blockd.core.index import BlockIndex
from blockd.core.model import Action
from blockd.daemon.metrics import StatsCollector
from blockd.daemon.tasks import Tasks
from blockd.store.engine import is_postgres
from blockd.store.follow import Clock, IndexFollower, utcnow
from blockd.store.hits import HitCounter
from blockd.store.retention import daemon_actor, prune
from blockd.store.shared import SharedStore
from blockd.store.snapshot import snapshot_path
from blockd.store.timeline import Timeline

log = logging.getLogger("blockd")

FOLLOW_INTERVAL = 0.2  # seconds between journal polls: a change is enforced within ~1 s
SNAPSHOT_INTERVAL = 1.0  # seconds between looks at whether the snapshot on disk is behind
CHECK_BUDGET = 10.0  # seconds an integrity check of the store may take at most
PRUNE_INTERVAL = 3600.0  # seconds between hit retention runs
PRUNE_FIRST = 0.5  # seconds after start: the first run (a daemon down for days catches up)


def dns_actions(enforcement: Mapping[str, EnforcementPolicy]) -> dict[str, Action]:
    return {name: p.dns_action for name, p in enforcement.items()}


def policy_record(enforcement: Mapping[str, EnforcementPolicy]) -> dict[str, Any]:
    """The regime policies as plain data, recorded in each snapshot of the policy."""
    return {name: dataclasses.asdict(p) for name, p in enforcement.items()}


class Core:
    """Configuration, policies and the live index, shared by a process's daemons."""

    def __init__(
        self, config: Config, enforcement: Mapping[str, EnforcementPolicy] | None = None,
        *, clock: Clock = utcnow, follow_interval: float = FOLLOW_INTERVAL,
        instance: str = "blockd",
    ) -> None:
        self.config = config
        self.instance = instance  # names this process's snapshot (dns, dns.2, http, nft)
        self.enforcement: Mapping[str, EnforcementPolicy] = (
            enforcement if enforcement is not None else load_policies(config.policy_dirs))
        self.store = SharedStore(config.db)
        self.follower = IndexFollower(
            self.store, dns_actions(self.enforcement), clock=clock, instance=instance,
            snapshot=snapshot_path(config.state_path(), instance),
            policies=policy_record(self.enforcement))
        self.hits = HitCounter(self.store, self._anonymisation)
        self.follower.on_swap(lambda _index: self.hits.forget())
        self.timeline = Timeline(self.store, instance)
        # `blockd cache flush [NAME]`: each DNS service's cache (daemon/control.py)
        self.cache_flushers: list[Callable[[str | None], int]] = []
        self.metrics = StatsCollector(self)
        self.follow_interval = follow_interval
        self._clock = clock
        self.tasks = Tasks()
        self._reload_listeners: list[Callable[[], None]] = []
        self.reloads = 0  # configurations installed by reload() (metrics)
        self.reload_errors = 0  # reloads refused for a broken file (process.reload_core)
        self._started = False
        self._verifying: asyncio.Task[Any] | None = None
        self._wake = asyncio.Event()  # a journal notification arrived: poll now
        self.listening: bool | None = None  # PostgreSQL LISTEN in place (None: SQLite)

    # -- what the daemons read -------------------------------------------------------

    @property
    def index(self) -> BlockIndex:
        """The block index in force (an immutable snapshot; swapped, never mutated)."""
        return self.follower.index

    @property
    def healthy(self) -> bool:
        """False while the last good policy is enforced without the store (unreadable,
        damaged, refused) or the tables are not what the journal proves."""
        return self.follower.healthy

    def on_swap(self, listener: Callable[[BlockIndex], None]) -> None:
        """Call ``listener`` on the event loop after each new index."""
        self.follower.on_swap(listener)

    def now(self) -> datetime:
        """The daemon's clock (a test's, or UTC now)."""
        return self._clock()

    def enforcing(self, channel: str) -> None:
        """This process enforces each index on ``channel`` (dns, http) from the moment it
        is swapped in: note it for the enforcement timeline, now and after every swap."""
        self.timeline.enforced(channel, self.index.seq, self.now())
        self.on_swap(lambda index: self.timeline.enforced(channel, index.seq, self.now()))

    async def _flush(self) -> None:
        """Hits and timeline notes, each in its own transaction (one failing keeps its
        data for the next round without holding back the other)."""
        await self.hits.flush()
        await self.timeline.flush()

    def on_reload(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after :meth:`reload` installed a new configuration."""
        self._reload_listeners.append(listener)

    def _anonymisation(self, reference: str) -> Anonymisation:
        """What the policy of an order feeds the distinct-client estimate."""
        order = self.index.orders.get(reference)
        policy = self.enforcement.get(order.policy if order is not None else "default")
        return policy.client_anonymisation if policy is not None else Anonymisation.HASH

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Load the index (from the store, else from the last good snapshot; raises
        BlockdError if neither can be used), then follow the journal, check the store,
        keep the snapshot current and flush hits in the background. Idempotent."""
        if self._started:
            return
        await self.follower.load()
        self._started = True
        self._verifying = self.tasks.spawn(self._prove())  # serving meanwhile
        self.tasks.spawn(self._follow())
        if is_postgres(self.config.db):  # other hosts write: they say so at commit
            from blockd.store.listen import listen

            self.tasks.spawn(listen(self.config.db, self._wake.set, self._listening))
        self.tasks.spawn(self._every(self.config.hits_flush_interval, self._flush))
        self.tasks.spawn(self._every(SNAPSHOT_INTERVAL, self.follower.save_snapshot))
        self.tasks.spawn(self._every(self.config.store_check_interval, self._check))
        self.tasks.spawn(self._every(PRUNE_INTERVAL, self.prune_hits, first=PRUNE_FIRST))

    async def _follow(self) -> None:
        """Poll the journal every ``follow_interval``, and at once when woken (a
        PostgreSQL notification): one poll at a time, so swaps stay in journal order."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.follow_interval)
            self._wake.clear()
            try:
                await self.follower.poll()
            except Exception:  # a failing round must not end the loop
                log.exception("background step failed")

    def _listening(self, up: bool) -> None:
        self.listening = up

    async def prune_hits(self) -> None:
        """Delete hit buckets past their policy's retention (one journal entry per run
        that deleted any); not while enforcing without a healthy store."""
        if not self.healthy:
            return
        entry = await asyncio.to_thread(
            prune, self.store.get(), self.enforcement, self.now(),
            daemon_actor(self.instance))
        if entry is not None:
            log.info("hits pruned buckets=%s days=%s..%s seq=%s", entry.data["buckets"],
                     entry.data["from"], entry.data["to"], entry.seq)

    async def _prove(self) -> None:
        """At start: the integrity check, then the tables against the journal."""
        if self.follower.origin == "store":
            await self._check()
            await self.follower.verify()

    async def _check(self) -> None:
        await self.follower.check(min(CHECK_BUDGET, self.config.store_check_interval))

    async def stop(self) -> None:
        """Stop the loops, write the hits still in memory, close the store."""
        await self.tasks.cancel_all()
        await self._flush()
        await asyncio.to_thread(self.store.close)
        self._started = False

    async def verified(self) -> None:
        """Wait until the tables loaded at start have been proven against the journal."""
        if self._verifying is not None:
            await asyncio.shield(self._verifying)

    async def poll(self) -> bool:
        """Apply the journal and clock now (tests; the loop does it every 0.2 s)."""
        return await self.follower.poll()

    def reload(self, config: Config, enforcement: Mapping[str, EnforcementPolicy]) -> None:
        """Install a new configuration and policies (SIGHUP); the daemons apply what can
        change live. The store path is not among it: that needs a restart."""
        if config.db != self.config.db:
            log.warning("reload: the store changes only on restart (keeping %s)",
                        self.config.db)
            config = config.with_db(self.config.db)
        self.config = config
        self.enforcement = enforcement
        self.reloads += 1
        self.follower.set_actions(dns_actions(enforcement))
        self.follower.policies = policy_record(enforcement)
        self.follower.request_reload()  # and prove the tables against the journal again
        self.hits.forget()
        for listener in self._reload_listeners:
            listener()

    @staticmethod
    async def _every(seconds: float, step: Callable[[], Awaitable[object]],
                     first: float | None = None) -> None:
        await asyncio.sleep(seconds if first is None else first)
        while True:
            try:
                await step()
            except Exception:  # a failing round must not end the loop
                log.exception("background step failed")
            await asyncio.sleep(seconds)
