"""Proof of timely enforcement: received -> in force per channel, against the deadline.

The daemons record when each instance first enforced each journal entry (the store's
``enforcements``); this module turns those rows into what a regulator asks: since when is
the order in force on each channel, and was that within the policy's deadline. Pure: the
rows, the order and the policy come in, a verdict goes out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from blockd.core.enforcement import EnforcementPolicy
from blockd.core.model import OrderRecord, TargetKind

MET, MISSED, PENDING, OVERDUE, NO_DEADLINE = "met", "missed", "pending", "overdue", "none"


@dataclass(frozen=True, slots=True)
class ChannelProof:
    channel: str
    since: datetime | None  # first in force on this channel (None: not recorded)
    instances: tuple[str, ...]  # the daemon instances that recorded it
    verdict: str  # met, missed, pending, overdue, none (no deadline)

    def as_dict(self) -> dict[str, object]:
        return {"channel": self.channel, "since": _iso(self.since),
                "instances": list(self.instances), "verdict": self.verdict}


@dataclass(frozen=True, slots=True)
class OrderProof:
    reference: str
    received: datetime
    due: datetime | None
    channels: tuple[ChannelProof, ...]
    since: datetime | None  # in force on its first expected channel

    @property
    def verdict(self) -> str:
        """Missed if any expected channel missed or is overdue; met if all met."""
        verdicts = {c.verdict for c in self.channels}
        for worst in (MISSED, OVERDUE, PENDING):
            if worst in verdicts:
                return worst
        return NO_DEADLINE if self.due is None else MET

    def as_dict(self) -> dict[str, object]:
        return {"received": _iso(self.received), "due": _iso(self.due),
                "in_force_since": _iso(self.since), "verdict": self.verdict,
                "channels": [c.as_dict() for c in self.channels]}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def expected_channels(order: OrderRecord, kinds: set[TargetKind] | None = None
                      ) -> tuple[str, ...]:
    """Where the order's targets (of ``kinds``, else the order's own) are enforced:
    names by DNS and the notice server, addresses by nftables."""
    if kinds is None:
        kinds = {t.kind for t in order.targets}
    channels: list[str] = []
    if not kinds or TargetKind.DOMAIN in kinds:
        channels += ["dns", "http"]
    if kinds - {TargetKind.DOMAIN}:
        channels.append("nft")
    return tuple(channels)


def prove(order: OrderRecord, policy: EnforcementPolicy | None, added_seq: int,
          rows: Iterable[tuple[int, str, str, datetime]], now: datetime,
          kinds: set[TargetKind] | None = None) -> OrderProof:
    """The proof for ``order``, whose ``order.add`` is journal entry ``added_seq``;
    ``rows`` are the timeline rows (seq, channel, instance, at) of its entries; ``kinds``
    the kinds of its targets when ``order`` is passed without them."""
    expected = expected_channels(order, kinds)
    first: dict[str, datetime] = {}
    instances: dict[str, set[str]] = {}
    for seq, channel, instance, at in rows:
        if seq != added_seq:
            continue
        if channel not in first or at < first[channel]:
            first[channel] = at
        instances.setdefault(channel, set()).add(instance)
    due = (policy.deadline.due(order.received_at, policy.tz)
           if policy is not None and policy.deadline is not None else None)
    start = order.effective_from
    channels = []
    for channel in (*expected, *sorted(c for c in first if c not in expected)):
        since = first.get(channel)
        if since is not None and start is not None and start > since:
            since = start  # recorded before its first day: in force from that day
        channels.append(ChannelProof(channel, since, tuple(sorted(instances.get(channel, ()))),
                                     _verdict(since, due, now)))
    times = [c.since for c in channels if c.channel in expected and c.since is not None]
    return OrderProof(order.reference, order.received_at, due, tuple(channels),
                      min(times) if times else None)


def _verdict(since: datetime | None, due: datetime | None, now: datetime) -> str:
    if due is None:
        return NO_DEADLINE
    if since is None:
        return OVERDUE if now > due else PENDING
    return MET if since <= due else MISSED


def late(order: OrderRecord, policy: EnforcementPolicy | None, now: datetime
         ) -> datetime | None:
    """The deadline an order is added after (None: added in time, or no deadline)."""
    if policy is None or policy.deadline is None:
        return None
    due = policy.deadline.due(order.received_at, policy.tz)
    return due if now > due else None
