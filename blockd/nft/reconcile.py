"""Keep table ``inet blockd`` equal to the address orders in force, and read its counters.

The nftables step of the data path: block index -> desired sets (``ruleset.desired``, the
guard's last word included) -> difference to what was applied -> one atomic batch
(``netlink.apply``); and element counters -> hits of the order and target behind each
prefix. State is bounded by what is in the kernel: the applied sets and, per applied
element, its last packet counter. Netlink calls are blocking and run in worker threads.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from blockd.config import Config
from blockd.core.enforcement import EnforcementPolicy, NftAction
from blockd.core.guard import Guard
from blockd.core.index import BlockIndex
from blockd.core.model import BlockdError
from blockd.nft import netlink, ruleset
from blockd.nft.guarded import refuser
from blockd.store.shared import SharedStore

log = logging.getLogger("blockd.nft")

Element = tuple[ruleset.Key, netlink.Network]


def notice_of(config: Config) -> ruleset.Notice:
    """Where port-80 traffic for notice-set addresses goes: the configured notice
    addresses and the notice server's (first) port."""
    return ruleset.Notice(
        ipaddress.IPv4Address(config.notice_ipv4) if config.notice_ipv4 else None,
        ipaddress.IPv6Address(config.notice_ipv6) if config.notice_ipv6 else None,
        config.notice_listen[0][1] if config.notice_listen else 80)


def nft_actions(enforcement: Mapping[str, EnforcementPolicy]) -> dict[str, NftAction]:
    return {name: p.nft_action for name, p in enforcement.items()}


@dataclass
class ReconcileStats:
    """Read by the metrics collector. ``packets``: per set name, the growth of its element
    counters seen by ``hits`` (what the kernel matched since the daemon started; the first
    read of an element counts everything since it was added)."""

    applies: int = 0
    added: int = 0
    removed: int = 0
    failures: int = 0
    counter_reads: int = 0
    packets: dict[str, int] = field(default_factory=dict)


class Reconciler:
    """Desired -> diff -> apply, and counters -> hits, for one table."""

    def __init__(self, store: SharedStore, guard: Guard, actions: Mapping[str, NftAction],
                 notice: ruleset.Notice, local_output: bool = False) -> None:
        self.store = store
        self.guard = guard
        self.actions = dict(actions)
        self.notice = notice
        self.local_output = local_output
        self.applied: dict[ruleset.Key, set[netlink.Network]] = {k: set() for k in ruleset.SETS}
        self.exists = False
        self.in_kernel = -1  # journal seq of the index the kernel rules match (-1: none yet)
        self.stats = ReconcileStats()
        self._packets: dict[Element, int] = {}
        self._lock = asyncio.Lock()
        self._forced_known: set[str] = set()  # the last forced set the store gave

    async def load(self) -> None:
        """Read what the kernel holds now (the table survives a restart of the daemon)."""
        def read() -> tuple[bool, dict[ruleset.Key, set[netlink.Network]]]:
            names = netlink.existing_sets(ruleset.TABLE)
            return bool(names), {
                key: set(netlink.read_set(ruleset.TABLE, name, key[0])) if name in names
                else set() for key, name in ruleset.SETS.items()}

        self.exists, self.applied = await asyncio.to_thread(read)

    def _forced(self) -> set[str]:
        self._forced_known = self.store.get().forced_targets()
        return self._forced_known

    async def reconcile(self, index: BlockIndex) -> list[ruleset.Change] | None:
        """Apply the difference for ``index``; the changes made, or None if nothing was
        applied (no difference, or the kernel refused: the previous rules stay)."""
        async with self._lock:
            try:
                forced = await asyncio.to_thread(self._forced)
            except BlockdError:  # unreadable store: what it said last (none after a start
                forced = self._forced_known  # from the snapshot: the guard then refuses)
            want = ruleset.desired(index, self.actions, refused=refuser(self.guard, forced))
            changes = ruleset.diff(self.applied, want)
            if self.exists and not any(c.add or c.remove for c in changes):
                self.in_kernel = index.seq
                return None
            batch = ruleset.plan(changes, self.exists, self.notice, self.local_output)
            try:
                await asyncio.to_thread(netlink.apply, batch)
            except netlink.NftError as exc:
                self.stats.failures += 1
                log.error("nftables not updated (previous rules stay): %s", exc)
                return None
            self.exists = True
            self.applied = want
            self.in_kernel = index.seq
            added = sum(len(c.add) for c in changes)
            removed = sum(len(c.remove) for c in changes)
            self.stats.applies += 1
            self.stats.added += added
            self.stats.removed += removed
            for gone in ((c.key, n) for c in changes for n in c.remove):
                self._packets.pop(gone, None)
            log.info("nftables: %d added, %d removed (journal seq %s)", added, removed,
                     index.seq)
            return changes

    async def hits(self, index: BlockIndex) -> list[tuple[str, str, int]]:
        """(order reference, target, packets since the last read) per element whose
        counter grew; the first read of an element counts everything since it was added."""
        def read() -> dict[Element, int]:
            out: dict[Element, int] = {}
            for key, name in ruleset.SETS.items():
                if self.applied.get(key):
                    for net, (packets, _) in netlink.read_set(ruleset.TABLE, name,
                                                              key[0]).items():
                        out[(key, net)] = packets
            return out

        counters = await asyncio.to_thread(read)
        self.stats.counter_reads += 1
        found = []
        for (key, net), packets in counters.items():
            delta = packets - self._packets.get((key, net), 0)
            if delta > 0:
                name = ruleset.SETS[key]
                self.stats.packets[name] = self.stats.packets.get(name, 0) + delta
                decision = index.decide_ip(str(net.network_address))
                if decision.primary is not None:
                    found.append((decision.primary.order.reference,
                                  decision.primary.target.spec, delta))
        self._packets = counters  # only what the kernel holds now: bounded
        return found
