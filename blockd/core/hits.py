"""Hit buckets and the summaries `blockd hits` and `order show` print (no I/O here).

A bucket is what the daemons store per (order, UTC day, channel) and target: a count and
a sketch of distinct clients (``core/sketch.py``). Summing counts is exact; distinct
clients over several buckets come from merging their sketches (a union, not a sum).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date

from blockd.core.sketch import STANDARD_ERROR, Sketch

GROUPINGS = ("order", "target", "day", "channel")
CHANNELS = ("dns", "http", "nft")
# Merging sketches costs up to a millisecond per stored bucket (dense registers): beyond
# this many the estimate is left out rather than making the answer slow.
MAX_SKETCHES = 20_000
ERROR_3SIGMA = 3 * STANDARD_ERROR  # the stated bound on the distinct estimate's error


@dataclass(frozen=True, slots=True)
class HitBucket:
    """Hits of one (order, UTC day, channel) and target ("" in the per-order rollup)."""

    day: date
    reference: str
    target: str
    channel: str
    count: int
    clients: bytes | None = None  # a stored sketch, or None when nothing was fed


@dataclass(frozen=True, slots=True)
class HitQuery:
    """What ``blockd hits`` asks for (None: any)."""

    reference: str | None = None
    target: str | None = None
    channel: str | None = None
    since: date | None = None
    until: date | None = None
    by: str = "order"
    clients: bool = True  # read the sketches too


@dataclass
class HitGroup:
    key: str
    hits: int = 0
    buckets: int = 0
    first: date | None = None
    last: date | None = None
    sketch: Sketch | None = field(default=None, repr=False)

    @property
    def clients(self) -> int | None:
        return self.sketch.estimate() if self.sketch is not None else None


@dataclass
class HitSummary:
    groups: list[HitGroup]
    total: int
    buckets: int
    sketches: int  # buckets that carried a sketch
    estimated: bool  # False: too many sketches, distinct estimates left out
    clients: int | None = None  # distinct over everything summarised
    damaged: int = 0  # stored sketches that could not be read (left out)

    def as_dict(self, by: str) -> dict[str, object]:
        return {
            "by": by, "total": self.total, "buckets": self.buckets,
            "clients_estimated": self.estimated, "clients": self.clients,
            "clients_error": round(ERROR_3SIGMA, 3), "damaged_sketches": self.damaged,
            "rows": [{by: g.key, "hits": g.hits, "clients": g.clients,
                      "first": g.first.isoformat() if g.first else None,
                      "last": g.last.isoformat() if g.last else None}
                     for g in self.groups]}


GroupRow = tuple[str, int, date, date, int, int]  # key, hits, first, last, buckets, sketched


def from_groups(groups: list[GroupRow], sketches: Callable[[], Iterable[tuple[str, bytes]]],
                max_sketches: int = MAX_SKETCHES) -> HitSummary:
    """A summary from counts the database summed per group (``Store.hit_groups``);
    ``sketches`` is read and merged per group only if there are at most ``max_sketches``
    (beyond that the estimate is left out rather than making the answer slow)."""
    rows = [HitGroup(key, hits, buckets, first, last)
            for key, hits, first, last, buckets, _ in groups]
    sketched = sum(g[5] for g in groups)
    summary = HitSummary(rows, sum(g.hits for g in rows), sum(g.buckets for g in rows),
                         sketched, sketched <= max_sketches)
    if summary.estimated and sketched:
        wanted = {g.key: g for g in rows}
        overall = Sketch()
        for key, data in sketches():
            group = wanted.get(key)
            if group is None:
                continue  # beyond --top
            if group.sketch is None:
                group.sketch = Sketch()
            try:
                group.sketch.merge_bytes(data)
                overall.merge_bytes(data)
            except ValueError:  # a damaged blob: counted, left out of the estimate
                summary.damaged += 1
        summary.clients = overall.estimate()
    return summary


def _key(bucket: HitBucket, by: str) -> str:
    if by == "order":
        return bucket.reference
    if by == "target":
        return f"{bucket.reference} {bucket.target}"
    if by == "day":
        return bucket.day.isoformat()
    return bucket.channel


def summarise(buckets: Iterable[HitBucket], by: str = "order", top: int | None = None,
              max_sketches: int = MAX_SKETCHES) -> HitSummary:
    """Group buckets, busiest first (by day: in date order); ``top`` keeps the first N."""
    groups: dict[str, HitGroup] = {}
    rows = list(buckets)
    with_sketch = sum(1 for b in rows if b.clients is not None)
    estimate = with_sketch <= max_sketches
    overall: Sketch | None = None
    total = damaged = 0
    for b in rows:
        key = _key(b, by)
        group = groups.get(key)
        if group is None:
            group = groups[key] = HitGroup(key)
        group.hits += b.count
        group.buckets += 1
        total += b.count
        group.first = b.day if group.first is None else min(group.first, b.day)
        group.last = b.day if group.last is None else max(group.last, b.day)
        if estimate and b.clients is not None:
            if group.sketch is None:
                group.sketch = Sketch()
            try:
                group.sketch.merge_bytes(b.clients)
            except ValueError:  # a damaged blob: counted, left out of the estimate
                damaged += 1
    if estimate:
        for group in groups.values():
            if group.sketch is not None:
                if overall is None:
                    overall = Sketch()
                overall.merge(group.sketch)
    ordered = sorted(groups.values(), key=(lambda g: g.key) if by == "day"
                     else (lambda g: (-g.hits, g.key)))
    if top is not None:
        ordered = ordered[:top]
    return HitSummary(ordered, total, len(rows), with_sketch, estimate,
                      overall.estimate() if overall is not None else None, damaged)
