"""The answer cache: upstream responses kept as bytes, served with patched TTLs.

Keyed by (name, type, class, DO bit, CD bit), names case-insensitive. An entry stores the message
after its question with the upstream OPT removed, and where every TTL sits, so a hit is a
header, the client's question, and the body with TTLs lowered by the entry's age. Negative
answers are cached for their SOA minimum (RFC 2308); expired entries are kept a while
longer to be served stale when every upstream fails (RFC 8767). Bounded by bytes (LRU).
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass, field

from blockd.dns import wire

Key = tuple[str, int, int, bool, bool]
STALE_TTL = 30  # RFC 8767's recommended TTL for stale answers
AD = wire.AD
_TTL = struct.Struct("!I")


@dataclass(slots=True)
class Entry:
    body: bytes
    ttl_offsets: tuple[int, ...]
    ttls: tuple[int, ...]
    rcode: int
    an: int
    ns: int
    ar: int
    ad: bool
    stored: float
    ttl: int
    chain: tuple[str, ...] = ()  # CNAME targets: re-checked against the policy on every hit
    additional_at: int = -1  # where the (non-OPT) additional records begin in ``body``
    _age: int = -1
    _rendered: bytes = field(default=b"", repr=False)

    def body_at(self, age: int, stale: bool) -> bytes:
        """The body with TTLs as of ``age`` seconds after storing (memoised per second)."""
        if stale:
            return self._patch([STALE_TTL] * len(self.ttls))
        if age != self._age:
            self._rendered = self._patch([max(0, t - age) for t in self.ttls])
            self._age = age
        return self._rendered

    def _patch(self, values: list[int]) -> bytes:
        out = bytearray(self.body)
        for offset, value in zip(self.ttl_offsets, values, strict=True):
            _TTL.pack_into(out, offset, value)
        return bytes(out)

    @property
    def negative(self) -> bool:
        return self.rcode == wire.NXDOMAIN or self.an == 0

    @property
    def size(self) -> int:
        return len(self.body) + 200

    @classmethod
    def from_layout(cls, response: bytes, lay: wire.Layout, now: float) -> Entry:
        """Split a walked upstream response into a reusable entry (OPT removed)."""
        _, flags, _, an, ns, ar = wire.HEADER.unpack_from(response)
        body = response[lay.question_end:]
        offsets = [o - lay.question_end for o in lay.ttl_offsets]
        if lay.opt_span is not None:
            start, end = (p - lay.question_end for p in lay.opt_span)
            body = body[:start] + body[end:]
            offsets = [o if o < start else o - (end - start) for o in offsets]
            ar -= 1
        # a TTL with the top bit set counts as 0 (RFC 2181 8)
        ttls = tuple(t if t < 0x80000000 else 0
                     for t in (_TTL.unpack_from(body, o)[0] for o in offsets))
        additional_at = lay.additional_start - lay.question_end
        return cls(body, tuple(offsets), ttls, flags & 0xF, an, ns, ar, bool(flags & AD),
                   now, lay.ttl, lay.chain, additional_at)


class Cache:
    def __init__(self, max_bytes: int = 64 * 1024 * 1024, stale_for: float = 86400.0,
                 max_ttl: int = 86400, max_negative_ttl: int = 3600) -> None:
        self.max_bytes = max_bytes
        self.stale_for = stale_for
        self.max_ttl = max_ttl
        self.max_negative_ttl = max_negative_ttl
        self.bytes = 0
        self._entries: OrderedDict[Key, Entry] = OrderedDict()
        self.hits = self.misses = self.evictions = self.stale_served = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def flush(self, name: str | None = None) -> int:
        """Drop every entry (``name`` None) or those of one name; how many."""
        if name is None:
            count = len(self._entries)
            self.clear()
            return count
        gone = [key for key in self._entries if key[0] == name]
        for key in gone:
            self.bytes -= self._entries.pop(key).size
        return len(gone)

    def put(self, key: Key, entry: Entry) -> None:
        """Keep an entry for its TTL, evicting the least recently used. TTLs are capped
        (like Unbound's cache-max-ttl and cache-max-negative-ttl; RFC 2308 5) in the entry
        and in every record served from it."""
        cap = self.max_negative_ttl if entry.negative else self.max_ttl
        entry.ttl = min(entry.ttl, cap)
        entry.ttls = tuple(min(t, cap) for t in entry.ttls)
        if entry.ttl <= 0:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old.size
        self._entries[key] = entry
        self.bytes += entry.size
        while self.bytes > self.max_bytes and self._entries:
            _, dropped = self._entries.popitem(last=False)
            self.bytes -= dropped.size
            self.evictions += 1

    def get(self, key: Key, now: float, *, stale_ok: bool = False) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        age = now - entry.stored
        if age >= entry.ttl:
            if age >= entry.ttl + self.stale_for:
                del self._entries[key]
                self.bytes -= entry.size
                self.misses += 1
                return None
            if not stale_ok:
                self.misses += 1
                return None
            self.stale_served += 1
        else:
            self.hits += 1
        self._entries.move_to_end(key)
        return entry

    @staticmethod
    def render(query: wire.Query, entry: Entry, now: float, *, stale: bool = False,
               limit: int | None = None) -> bytes:
        """The answer for ``query``. Over ``limit`` bytes (UDP), the additional records
        are left out first (RFC 2181 9: TC only when the answer itself does not fit)."""
        age = int(now - entry.stored)
        flags = wire.response_flags(query.flags, entry.rcode) | (
            AD if entry.ad and query.wants_ad else 0)
        body = entry.body_at(age, stale)
        ar = entry.ar
        opt = b""
        if query.edns:
            opt = wire.opt_record(
                query.do, wire.ede_option(wire.EDE_STALE) if stale else b"")
        size = 12 + len(query.question) + len(body) + len(opt)
        if limit is not None and size > limit and ar and entry.additional_at >= 0:
            body, ar = body[:entry.additional_at], 0
        return (wire.header(query.id, flags, entry.an, entry.ns, ar + (1 if opt else 0))
                + query.question + body + opt)


def truncated(query: wire.Query, rcode: int = wire.NOERROR) -> bytes:
    """TC=1 with the question only: the client retries over TCP (RFC 7766)."""
    flags = wire.response_flags(query.flags, rcode, tc=True)
    if query.edns:
        return wire.header(query.id, flags, ar=1) + query.question + wire.opt_record(query.do)
    return wire.header(query.id, flags) + query.question
