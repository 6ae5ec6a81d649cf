"""Hit counting: blocked answers, notices served and packets dropped, per (order, target,
channel, UTC day), with an estimate of distinct clients that stores no client.

Counted in memory on the hot path (a dict increment and, for a client, one keyed hash into
a HyperLogLog sketch: :class:`blockd.core.sketch.Sketch`) and written to the store in one
transaction per :meth:`HitCounter.flush`, which the daemon core calls every few seconds,
so a query never waits for a database write. A failed flush keeps the counts.

The hash key is derived per UTC day from a secret drawn when the process starts (forked
workers inherit it, so one client counts once across workers). It is never written
anywhere: once the day or the process is over, nobody, the operator included, can tell
whether an address is among the ones counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime

from blockd.core.enforcement import Anonymisation
from blockd.core.hits import HitBucket
from blockd.core.sketch import Sketch
from blockd.store.shared import SharedStore

log = logging.getLogger("blockd.hits")

HitKey = tuple[date, str, str, str]  # day, order, target, channel

_SECRET = os.urandom(32)  # in memory only; see the module docstring


def day_key(day_number: int, secret: bytes = _SECRET) -> bytes:
    """The hash key of one UTC day (days since the epoch)."""
    return hashlib.blake2b(day_number.to_bytes(4, "big"), key=secret, digest_size=32).digest()


def client_value(client: str, mode: Anonymisation) -> bytes | None:
    """What of a client feeds the sketch: the address (``hash``), its /24 or /48
    (``truncate``), or nothing (``none``, ``drop``)."""
    if mode is Anonymisation.HASH:
        return client.encode()
    if mode is Anonymisation.TRUNCATE:
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return None
        prefix = 24 if address.version == 4 else 48
        return str(ipaddress.ip_network(f"{client}/{prefix}", strict=False)).encode()
    return None


class HitCounter:
    """Pending hits of one process (all its channels) until the next flush.

    ``modes`` says, for an order reference, what its policy feeds the client estimate;
    it is asked once per reference until :meth:`forget` (a new index or policy)."""

    def __init__(self, store: SharedStore,
                 modes: Callable[[str], Anonymisation] = lambda _ref: Anonymisation.HASH
                 ) -> None:
        self.store = store
        self.modes = modes
        self.pending: Counter[HitKey] = Counter()
        self.sketches: dict[HitKey, Sketch] = {}
        self.flushed = 0
        self.failures = 0
        self._mode: dict[str, Anonymisation] = {}
        self._day_number = -1
        self._day = date(1970, 1, 1)
        self._key = b""

    def channel(self, name: str) -> ChannelHits:
        """The sink a daemon of this channel (dns, http, nft) counts into."""
        return ChannelHits(self, name)

    def forget(self) -> None:
        """Orders or policies changed: ask ``modes`` again."""
        self._mode.clear()

    def add(self, channel: str, reference: str, target: str, count: int = 1,
            client: str | None = None) -> None:
        """Count hits (hot path: no clock object unless the UTC day has changed)."""
        number = int(time.time() // 86400)
        if number != self._day_number:
            self._day_number = number
            self._day = datetime.fromtimestamp(number * 86400, UTC).date()
            self._key = day_key(number)
        key = (self._day, reference, target, channel)
        self.pending[key] += count
        if client is None:
            return
        mode = self._mode.get(reference)
        if mode is None:
            mode = self._mode[reference] = self.modes(reference)
        value = client_value(client, mode)
        if value is None:
            return
        sketch = self.sketches.get(key)
        if sketch is None:
            sketch = self.sketches[key] = Sketch()
        sketch.add(int.from_bytes(
            hashlib.blake2b(value, key=self._key, digest_size=8).digest()))

    async def flush(self) -> None:
        """Write what was counted since the last flush, in a worker thread."""
        if not self.pending:
            return
        batch, self.pending = self.pending, Counter()
        sketches, self.sketches = self.sketches, {}
        try:
            await asyncio.to_thread(self._write, batch, sketches)
            self.flushed += sum(batch.values())
        except Exception as exc:  # keep counting; try again next round
            self.failures += 1
            self.pending.update(batch)
            for key, sketch in sketches.items():
                mine = self.sketches.get(key)
                if mine is None:
                    self.sketches[key] = sketch
                else:
                    mine.merge(sketch)
            log.warning("could not record %d hits: %s", sum(batch.values()), exc)


    def _write(self, batch: Counter[HitKey], sketches: dict[HitKey, Sketch]) -> None:
        buckets = []
        for key, count in batch.items():
            day, reference, target, channel = key
            sketch = sketches.get(key)
            buckets.append(HitBucket(day, reference, target, channel, count,
                                     sketch.encode() if sketch is not None else None))
        self.store.get().add_hits(buckets)


class ChannelHits:
    """A :class:`HitCounter` seen from one channel (the ``HitSink`` the adapters take)."""

    __slots__ = ("counter", "name")

    def __init__(self, counter: HitCounter, name: str) -> None:
        self.counter = counter
        self.name = name

    def add(self, reference: str, target: str, count: int = 1,
            client: str | None = None) -> None:
        self.counter.add(self.name, reference, target, count, client)
