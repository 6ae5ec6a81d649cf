"""The nftables follower as a handle: ``NftDaemon(core).start()`` makes table inet blockd
match the index in force and keeps it so after every swap; element counters become hits.

Stopping leaves the rules in place: enforcement must survive a restart of the daemon.
The metrics server runs beside it when ``[nft] metrics`` is set.
"""

from __future__ import annotations

import asyncio
import logging

from blockd.config import Address
from blockd.core.guard import load_guard
from blockd.core.index import BlockIndex
from blockd.daemon.core import Core
from blockd.daemon.metrics import MetricsServer, address_line, nft_group
from blockd.daemon.tasks import Tasks, cancel
from blockd.nft import netlink
from blockd.nft.reconcile import Reconciler, nft_actions, notice_of

log = logging.getLogger("blockd.nft")

COUNTER_INTERVAL = 5.0  # seconds between counter reads (at least)


class NftDaemon:
    """``blockd serve nft`` on a core."""

    name = "nft"

    def __init__(self, core: Core, *, metrics: bool = True) -> None:
        self.core = core
        config = core.config
        self.reconciler = Reconciler(core.store, load_guard(config.policy_dirs),
                                     nft_actions(core.enforcement), notice_of(config),
                                     config.nft_local_output)
        self.tasks = Tasks()  # reconciles after swaps and reloads
        self._counting: asyncio.Task[None] | None = None
        self.metrics = (MetricsServer(core.metrics, *config.nft_metrics)
                        if metrics and config.nft_metrics is not None else None)
        self.metrics_bound: Address | None = None

    async def start(self) -> list[Address]:
        core = self.core
        await core.start()
        await self.reconciler.load()
        await self._reconcile(core.index)
        core.on_swap(self._swapped)
        core.on_reload(self.reload)
        core.metrics.add("nft", nft_group(self.reconciler))
        if self.metrics is not None:
            self.metrics_bound = await self.metrics.start()
        self._counting = asyncio.get_running_loop().create_task(self._count_hits())
        return []

    def _swapped(self, index: BlockIndex) -> None:
        self.tasks.spawn(self._reconcile(index))

    async def _reconcile(self, index: BlockIndex) -> None:
        """Make the kernel match ``index``; once it does, the timeline notes it."""
        await self.reconciler.reconcile(index)
        if self.reconciler.in_kernel == index.seq:
            self.core.timeline.enforced("nft", index.seq, self.core.now())

    def reload(self) -> None:
        """New per-policy actions apply at the next change; the notice address and
        local_output need `blockd nft flush` and a restart (the skeleton is built once)."""
        self.reconciler.actions = nft_actions(self.core.enforcement)
        self.tasks.spawn(self._reconcile(self.core.index))

    async def _count_hits(self) -> None:
        interval = max(COUNTER_INTERVAL, self.core.config.hits_flush_interval)
        while True:
            await asyncio.sleep(interval)
            try:
                found = await self.reconciler.hits(self.core.index)
            except netlink.NftError as exc:
                log.warning("nftables counters not read: %s", exc)
                continue
            for reference, target, packets in found:
                self.core.hits.add("nft", reference, target, packets)

    async def stop(self) -> None:
        """Stop reading counters and let a reconcile in flight finish (the rules stay)."""
        await cancel(self._counting)
        await self.tasks.drain()
        if self.metrics is not None:
            await self.metrics.stop()

    def describe(self) -> str:
        return (f"blockd nft: table inet blockd follows the journal (seq "
                f"{self.core.index.seq})" + address_line(self.metrics_bound))
