"""The enforcement timeline: when each daemon instance first enforced each journal entry.

A daemon notes (channel, journal seq, time) when an index is in force: the DNS and notice
servers when the follower swaps it in, the nft follower when the kernel's sets match it.
Noting is a list append on the event loop; :meth:`Timeline.flush`, with the hit flush,
expands each note into one row per journal entry that changed what is enforced and
inserts them once (``ON CONFLICT DO NOTHING``: a restart keeps the first times).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from blockd.core.journal import ORDER_ADD, ORDER_STATUS, TARGET_ADD, TARGET_REMOVE
from blockd.store.shared import SharedStore

log = logging.getLogger("blockd.timeline")

ENFORCING = (ORDER_ADD, TARGET_ADD, TARGET_REMOVE, ORDER_STATUS)
# order.extend and order.amend change what is enforced too, where the journal has them
ENFORCING_MORE = ("order.extend", "order.amend")


class Timeline:
    """Notes of one daemon process (all its channels) until the next flush."""

    def __init__(self, store: SharedStore, instance: str) -> None:
        self.store = store
        self.instance = instance
        self.pending: list[tuple[str, int, datetime]] = []
        self._noted: dict[str, int] = {}  # channel -> newest seq noted
        self._recorded: dict[str, int] = {}  # channel -> newest seq written
        self.failures = 0

    def enforced(self, channel: str, seq: int, at: datetime) -> None:
        """The index at journal ``seq`` is in force on ``channel`` since ``at``."""
        if seq <= self._noted.get(channel, 0):
            return
        self._noted[channel] = seq
        self.pending.append((channel, seq, at))

    async def flush(self) -> None:
        if not self.pending:
            return
        notes, self.pending = self.pending, []
        try:
            await asyncio.to_thread(self._write, notes)
        except Exception as exc:  # kept for the next round
            self.failures += 1
            self.pending = notes + self.pending
            log.warning("enforcement timeline not recorded: %s", exc)

    def _write(self, notes: list[tuple[str, int, datetime]]) -> None:
        store = self.store.get()
        rows = []
        recorded = dict(self._recorded)
        for channel, seq, at in notes:
            after = recorded.get(channel)
            if after is None:
                after = store.last_enforced(channel, self.instance)
            if seq <= after:
                continue
            rows += [(s, channel, self.instance, at)
                     for s, action in store.journal_actions(after, seq)
                     if action in ENFORCING or action in ENFORCING_MORE]
            recorded[channel] = seq
        store.record_enforcements(rows)
        self._recorded = recorded
