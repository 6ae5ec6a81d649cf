"""Frozen value types shared by the core and every adapter.

The core never sees database rows or sockets: adapters turn what they read into these
types, so the policy logic can be tested with plain values and no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime


class BlockdError(Exception):
    """An error with a one-line, user-facing message (no traceback is ever shown for it)."""


class InputError(BlockdError):
    """A bad value supplied by the user; ``field`` names what was wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class TargetKind(enum.StrEnum):
    DOMAIN = "domain"
    IP = "ip"
    PREFIX = "prefix"


class DomainMatch(enum.StrEnum):
    """How a domain target covers names.

    ``subtree`` (the default) covers the name and every name below it; ``exact`` only the
    name itself; ``wildcard`` (written ``*.name``) only the names below it.
    """

    SUBTREE = "subtree"
    EXACT = "exact"
    WILDCARD = "wildcard"


class Status(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    LIFTED = "lifted"


class Action(enum.StrEnum):
    """What the DNS resolver answers for a blocked name (chosen by the order's policy)."""

    NOTICE = "notice"
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True, order=True)
class Target:
    """One thing an order blocks, in canonical form.

    ``value`` is the punycode name (without ``*.``), or the normalised address/prefix.
    ``spec`` is the canonical text form users type and files carry.
    """

    kind: TargetKind
    value: str
    match: DomainMatch = DomainMatch.SUBTREE

    @property
    def spec(self) -> str:
        if self.kind is not TargetKind.DOMAIN:
            return self.value
        if self.match is DomainMatch.EXACT:
            return "=" + self.value
        if self.match is DomainMatch.WILDCARD:
            return "*." + self.value
        return self.value

    def __str__(self) -> str:
        return self.spec


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """An order as the core sees it: the facts that decide and explain a block."""

    reference: str
    authority: str
    issued_on: date
    received_at: datetime
    status: Status = Status.ACTIVE
    jurisdiction: str | None = None
    effective_from: datetime | None = None
    effective_until: datetime | None = None
    requested_by: str | None = None
    legal_basis: str | None = None
    notice: str | None = None
    contact: str | None = None
    appeal: str | None = None
    policy: str = "default"
    status_reason: str | None = None
    targets: frozenset[Target] = field(default_factory=frozenset)

    def in_force(self, at: datetime) -> bool:
        """Active and inside its effective window (from inclusive, until exclusive)."""
        if self.status is not Status.ACTIVE:
            return False
        if self.effective_from is not None and at < self.effective_from:
            return False
        return not (self.effective_until is not None and at >= self.effective_until)


_TRANSITIONS = {
    (Status.ACTIVE, Status.SUSPENDED): "suspend",
    (Status.SUSPENDED, Status.ACTIVE): "resume",
    (Status.ACTIVE, Status.LIFTED): "lift",
    (Status.SUSPENDED, Status.LIFTED): "lift",
}


def check_transition(reference: str, current: Status, new: Status) -> None:
    """Allowed: suspend an active order, resume a suspended one, lift either.

    A lifted order is final: reinstating a block after it was overturned takes a new order.
    """
    if (current, new) not in _TRANSITIONS:
        verb = {Status.SUSPENDED: "suspend", Status.ACTIVE: "resume", Status.LIFTED: "lift"}[new]
        raise InputError("reference", f"cannot {verb} order {reference}: it is {current.value}")
