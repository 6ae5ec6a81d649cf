"""Hit counting: blocked answers and notices served, per (order, target, UTC day).

Counted in memory on the hot path (a dict increment) and flushed to the store in one
transaction every few seconds, so a query never waits for a database write. A failed
flush keeps the counts for the next attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from datetime import UTC, date, datetime

from blockd.daemon.tasks import cancel
from blockd.store.store import Store

log = logging.getLogger("blockd.store.hits")

HitKey = tuple[date, str, str]


class HitCounter:
    def __init__(self, db: str, interval: float = 5.0) -> None:
        self.db = db
        self.interval = interval
        self.pending: Counter[HitKey] = Counter()
        self.flushed = 0
        self.failures = 0
        self._task: asyncio.Task[None] | None = None
        self._store: Store | None = None
        self._day_number = -1
        self._day = date(1970, 1, 1)

    def add(self, reference: str, target: str, count: int = 1) -> None:
        """Count hits (hot path: no clock object unless the UTC day has changed)."""
        number = int(time.time() // 86400)
        if number != self._day_number:
            self._day_number = number
            self._day = datetime.fromtimestamp(number * 86400, UTC).date()
        self.pending[(self._day, reference, target)] += count

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="hits-flush")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
        await self.flush()
        if self._store is not None:
            self._store.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, Counter()
        try:
            await asyncio.to_thread(self._write, batch)
            self.flushed += sum(batch.values())
        except Exception as exc:  # keep counting; try again next round
            self.failures += 1
            self.pending.update(batch)
            self._store = None
            log.warning("could not record %d hits: %s", sum(batch.values()), exc)

    def _write(self, batch: Counter[HitKey]) -> None:
        if self._store is None:
            self._store = Store.open(self.db)
        self._store.add_hits(batch)
