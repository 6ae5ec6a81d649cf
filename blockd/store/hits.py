"""Hit counting: blocked answers and notices served, per (order, target, UTC day).

Counted in memory on the hot path (a dict increment: :class:`blockd.core.ports.HitSink`)
and written to the store in one transaction per :meth:`HitCounter.flush`, which the daemon
core calls every few seconds, so a query never waits for a database write. A failed flush
keeps the counts for the next attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from datetime import UTC, date, datetime

from blockd.store.shared import SharedStore

log = logging.getLogger("blockd.hits")

HitKey = tuple[date, str, str]


class HitCounter:
    def __init__(self, store: SharedStore) -> None:
        self.store = store
        self.pending: Counter[HitKey] = Counter()
        self.flushed = 0
        self.failures = 0
        self._day_number = -1
        self._day = date(1970, 1, 1)

    def add(self, reference: str, target: str, count: int = 1) -> None:
        """Count hits (hot path: no clock object unless the UTC day has changed)."""
        number = int(time.time() // 86400)
        if number != self._day_number:
            self._day_number = number
            self._day = datetime.fromtimestamp(number * 86400, UTC).date()
        self.pending[(self._day, reference, target)] += count

    async def flush(self) -> None:
        """Write what was counted since the last flush, in a worker thread."""
        if not self.pending:
            return
        batch, self.pending = self.pending, Counter()
        try:
            await asyncio.to_thread(self._write, batch)
            self.flushed += sum(batch.values())
        except Exception as exc:  # keep counting; try again next round
            self.failures += 1
            self.pending.update(batch)
            log.warning("could not record %d hits: %s", sum(batch.values()), exc)

    def _write(self, batch: Counter[HitKey]) -> None:
        self.store.get().add_hits(batch)
