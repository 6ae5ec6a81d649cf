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
import functools
import hashlib
import ipaddress
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from blockd.core.enforcement import Anonymisation
from blockd.core.hits import HitBucket
from blockd.core.sketch import PENDING_SPARSE, Sketch
from blockd.store.shared import SharedStore

log = logging.getLogger("blockd.hits")

HitKey = tuple[date, str, str, str]  # day, order, target, channel

_SECRET = os.urandom(32)  # in memory only; see the module docstring
HASH_CACHE = 65_536  # client addresses whose keyed hash is remembered (about 8 MB at most)


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
    it is asked once per reference until :meth:`forget` (a new index or policy).
    Each pending bucket is ``[count, slots]`` in one dict: one lookup per hit. ``slots``
    holds the sketch's registers: None (no client fed), one register as the int
    ``index << 8 | rank`` (most buckets: a name asked by one client; 28 bytes, where a
    dict was 232), a dict of the few set, or the dense array once more than
    PENDING_SPARSE are set.
    """

    def __init__(self, store: SharedStore,
                 modes: Callable[[str], Anonymisation] = lambda _ref: Anonymisation.HASH
                 ) -> None:
        self.store = store
        self.modes = modes
        self.entries: dict[HitKey, list[Any]] = {}
        # `blockd tail` readers (daemon/control.py): a line per hit while any listens
        self.watchers: list[asyncio.Queue[tuple[float, str, str, str, int]]] = []
        self.tail_dropped = 0
        self.flushed = 0
        self.failures = 0
        self._mode: dict[str, Anonymisation] = {}
        self._day_end = 0.0  # the epoch second the current UTC day ends
        self._day = date(1970, 1, 1)
        self._key = b""
        # today's clients (hash mode) as (register, rank): a subscriber asks again and
        # again, and the keyed hash is most of what counting a client costs. Memory only,
        # cleared with the key every day, and when it holds HASH_CACHE addresses.
        self._hashed: dict[str, tuple[int, int]] = {}

    @property
    def pending(self) -> Counter[HitKey]:
        """Counts not yet written (metrics, tests)."""
        return Counter({key: entry[0] for key, entry in self.entries.items()})

    @property
    def sketches(self) -> dict[HitKey, Sketch]:
        """Client sketches not yet written (tests)."""
        return {key: Sketch.from_slots(entry[1]) for key, entry in self.entries.items()
                if entry[1] is not None}

    def channel(self, name: str) -> ChannelHits:
        """The sink a daemon of this channel (dns, http, nft) counts into."""
        return ChannelHits(self, name)

    def forget(self) -> None:
        """Orders or policies changed: ask ``modes`` again."""
        self._mode.clear()

    def add(self, channel: str, reference: str, target: str, count: int = 1,
            client: str | None = None) -> None:
        """Count hits (hot path: a clock read, one dict lookup, and for a client seen
        today one more lookup and a register update)."""
        now = time.time()
        if now >= self._day_end:
            self._new_day(now)
        key = (self._day, reference, target, channel)
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = [0, None]
        entry[0] += count
        if self.watchers:
            self._tell(now, channel, reference, target, count)
        if client is None:
            return
        mode = self._mode.get(reference)
        if mode is None:
            mode = self._mode[reference] = self.modes(reference)
        if mode is Anonymisation.HASH:
            slot = self._hashed.get(client)
            if slot is None:
                if len(self._hashed) >= HASH_CACHE:
                    self._hashed.clear()
                slot = self._hashed[client] = self._slot(client.encode())
        else:
            value = client_value(client, mode)
            if value is None:
                return
            slot = self._slot(value)
        index, rank = slot
        slots = entry[1]
        if slots is None:  # most buckets: one client, one register, held as one int
            entry[1] = index << 8 | rank
        elif type(slots) is int:
            if slots >> 8 != index:
                entry[1] = {slots >> 8: slots & 0xFF, index: rank}
            elif rank > slots & 0xFF:
                entry[1] = index << 8 | rank
        elif rank > slots.get(index, 0) if type(slots) is dict else rank > slots[index]:
            slots[index] = rank
            if type(slots) is dict and len(slots) > PENDING_SPARSE:
                entry[1] = Sketch.from_slots(slots).registers

    def _tell(self, now: float, channel: str, reference: str, target: str,
              count: int) -> None:
        for queue in self.watchers:
            try:
                queue.put_nowait((now, channel, reference, target, count))
            except asyncio.QueueFull:  # a reader that does not keep up loses lines
                self.tail_dropped += 1

    def _new_day(self, now: float) -> None:
        number = int(now // 86400)
        self._day_end = (number + 1) * 86400.0
        self._day = datetime.fromtimestamp(number * 86400, UTC).date()
        self._key = day_key(number)
        self._hashed.clear()

    def _slot(self, value: bytes) -> tuple[int, int]:
        """The sketch register and rank of a keyed hash of ``value``."""
        return Sketch.slot(int.from_bytes(
            hashlib.blake2b(value, key=self._key, digest_size=8).digest()))

    async def flush(self) -> None:
        """Write what was counted since the last flush, in a worker thread."""
        if not self.entries:
            return
        batch, self.entries = self.entries, {}
        total = sum(entry[0] for entry in batch.values())
        try:
            await asyncio.to_thread(self._write, batch)
            self.flushed += total
        except Exception as exc:  # keep counting; try again next round
            self.failures += 1
            for key, (count, slots) in batch.items():
                entry = self.entries.setdefault(key, [0, None])
                entry[0] += count
                if slots is not None:
                    if entry[1] is None:
                        entry[1] = slots
                    else:
                        mine = Sketch.from_slots(entry[1])
                        mine.merge(Sketch.from_slots(slots))
                        entry[1] = mine.registers
            log.warning("could not record %d hits: %s", total, exc)

    def _write(self, batch: dict[HitKey, list[Any]]) -> None:
        buckets = []
        for (day, reference, target, channel), (count, slots) in batch.items():
            buckets.append(HitBucket(day, reference, target, channel, count,
                                     Sketch.encode_slots(slots)
                                     if slots is not None else None))
        self.store.get().add_hits(buckets)


class ChannelHits:
    """A :class:`HitCounter` seen from one channel (the ``HitSink`` the adapters take).
    ``add`` is the counter's, with the channel bound: no extra Python frame per hit."""

    __slots__ = ("add", "counter", "name")

    def __init__(self, counter: HitCounter, name: str) -> None:
        self.counter = counter
        self.name = name
        self.add: Callable[..., None] = functools.partial(counter.add, name)
