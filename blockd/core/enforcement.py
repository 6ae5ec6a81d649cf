"""Enforcement policies: how each regime's orders are put into force (the types).

A policy says what the resolver answers, for how long, what the EDE text and the notice
page say, how long hits are kept and how clients are pseudonymised, and by when an order
must be in force. Pure values: ``blockd.config`` reads them from ``policies/*.toml``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from blockd.core.index import BlockIndex, Decision
from blockd.core.model import Action


class DeadlineUnit(enum.StrEnum):
    MINUTES = "minutes"
    HOURS = "hours"
    DAYS = "days"
    WORKING_DAYS = "working_days"


class NftAction(enum.StrEnum):
    """What the appliance does with forwarded traffic to a blocked address."""

    DROP = "drop"  # silently: clients wait for a timeout
    REJECT = "reject"  # TCP reset, ICMP administratively prohibited: clients fail at once
    NOTICE = "notice"  # TCP port 80 to the notice server (DNAT); anything else rejected


class Anonymisation(enum.StrEnum):
    NONE = "none"
    TRUNCATE = "truncate"  # IPv4 /24, IPv6 /48
    HASH = "hash"  # keyed pseudonym, rotated
    DROP = "drop"  # no client data at all


@dataclass(frozen=True, slots=True)
class Deadline:
    """Time allowed between receiving an order and enforcing it."""

    amount: int
    unit: DeadlineUnit

    def due(self, received_at: datetime, tz: ZoneInfo) -> datetime:
        """When enforcement is due. Working days skip Saturdays and Sundays in ``tz``;
        public holidays are not modelled (the due time is then conservative)."""
        if self.unit is DeadlineUnit.MINUTES:
            return received_at + timedelta(minutes=self.amount)
        if self.unit is DeadlineUnit.HOURS:
            return received_at + timedelta(hours=self.amount)
        if self.unit is DeadlineUnit.DAYS:
            return received_at + timedelta(days=self.amount)
        local = received_at.astimezone(tz)
        if local.weekday() >= 5:  # received at a weekend: count from Monday 00:00
            local = (local + timedelta(days=7 - local.weekday())).replace(
                hour=0, minute=0, second=0, microsecond=0)
        left = self.amount
        while left:
            local += timedelta(days=1)
            if local.weekday() < 5:
                left -= 1
        # re-attach the zone so a DST change keeps the local time of day
        naive = local.replace(tzinfo=None)
        return naive.replace(tzinfo=tz).astimezone(received_at.tzinfo)

    def __str__(self) -> str:
        unit = self.unit.value.replace("_", " ")
        return f"{self.amount} {unit[:-1] if self.amount == 1 else unit}"


EDE_PLACEHOLDERS = frozenset({"reference", "authority", "url", "jurisdiction"})
DEFAULT_EDE = "blocked under order {reference} of {authority}; see {url}"


@dataclass(frozen=True, slots=True)
class EnforcementPolicy:
    name: str
    description: str = ""
    jurisdiction: str | None = None
    timezone: str = "UTC"
    dns_action: Action = Action.NOTICE
    dns_ttl: int = 30
    ede_text: str = DEFAULT_EDE
    # a name whose CNAME chain leads to a name under this policy's orders is blocked too
    # (a clone behind an alias); false: only the names the order lists
    block_cname_chains: bool = True
    notice_template: str = "default"
    languages: tuple[str, ...] = ("en",)
    hit_retention_days: int = 90
    client_anonymisation: Anonymisation = Anonymisation.HASH
    deadline: Deadline | None = None
    nft_action: NftAction = NftAction.REJECT

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def ede(self, reference: str, authority: str, url: str, jurisdiction: str = "") -> str:
        """The EDE EXTRA-TEXT for an order; placeholders were checked on load."""
        try:
            return self.ede_text.format(reference=reference, authority=authority, url=url,
                                        jurisdiction=jurisdiction)
        except (KeyError, IndexError, ValueError):
            return DEFAULT_EDE.format(reference=reference, authority=authority, url=url)


def through_chain(index: BlockIndex, chain: Iterable[str],
                  policies: Mapping[str, EnforcementPolicy]) -> tuple[str, Decision] | None:
    """The first name of a CNAME chain that an order blocks *through chains* (its policy's
    ``block_cname_chains``), with those orders; None if the chain leads nowhere blocked.
    The resolver, the notice server and ``check --resolve`` all decide it here."""
    default = policies.get("default")
    for name in chain:
        decision = index.decide_name(name)
        matches = tuple(m for m in decision.matches
                        if (regime := policies.get(m.order.policy, default)) is None
                        or regime.block_cname_chains)
        if matches:
            return name, Decision(decision.subject, matches)
    return None
