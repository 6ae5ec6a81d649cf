"""Enforcement policies: how each regime's orders are put into force (policies/*.toml).

A policy says what the resolver answers, for how long, what the EDE text and the notice
page say, how long hits are kept and how clients are pseudonymised, and by when an order
must be in force. Files are validated on load; every error names the file, the key and
the problem on one line, and unknown keys are errors (a typo must not pass silently).
"""

from __future__ import annotations

import enum
import re
import string
import sys
import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from blockd.core.model import Action, BlockdError
from blockd.core.timeparse import zone


class PolicyFileError(BlockdError):
    """``FILE: section.key: problem``."""


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


# section -> key -> (attribute, checker)
_NAME = re.compile(r"^[a-z0-9_-]+$")


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"must be a string, got {v!r}")
    return v


def _int_range(lo: int, hi: int) -> Any:
    def check(v: Any) -> int:
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ValueError(f"must be an integer between {lo} and {hi}, got {v!r}")
        return v
    return check


def _enum(cls: type[enum.StrEnum]) -> Any:
    def check(v: Any) -> Any:
        try:
            return cls(v)
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise ValueError(f"must be one of {choices}, got {v!r}") from None
    return check


def _jurisdiction(v: Any) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"[A-Z]{2}", v):
        raise ValueError(f"must be an ISO 3166 two-letter code in capitals, got {v!r}")
    return v


def _timezone(v: Any) -> str:
    try:
        zone(_str(v))
    except BlockdError:
        raise ValueError(f"unknown IANA time zone {v!r}") from None
    return str(v)


def _template(v: Any) -> str:
    if not isinstance(v, str) or not _NAME.match(v):
        raise ValueError(f"must be a template name of a-z, 0-9, _ and -, got {v!r}")
    return v


def _languages(v: Any) -> tuple[str, ...]:
    if (not isinstance(v, list) or not v
            or not all(isinstance(x, str) and re.fullmatch(r"[a-z]{2}", x) for x in v)):
        raise ValueError(f"must be a non-empty list of two-letter language codes, got {v!r}")
    return tuple(v)


def _ede_text(v: Any) -> str:
    text = _str(v)
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    except ValueError as exc:
        raise ValueError(f"bad braces in template ({exc})") from None
    unknown = fields - EDE_PLACEHOLDERS
    if unknown:
        allowed = ", ".join("{" + p + "}" for p in sorted(EDE_PLACEHOLDERS))
        raise ValueError(f"unknown placeholder {{{sorted(unknown)[0]}}} (allowed: {allowed})")
    if len(text.encode("utf-8")) > 300:
        raise ValueError("longer than 300 bytes (EDE text must fit a small DNS answer)")
    return text


_SCHEMA: dict[str | None, dict[str, tuple[str, Any]]] = {
    None: {
        "description": ("description", _str),
        "jurisdiction": ("jurisdiction", _jurisdiction),
        "timezone": ("timezone", _timezone),
    },
    "dns": {
        "action": ("dns_action", _enum(Action)),
        "ttl": ("dns_ttl", _int_range(1, 86400)),
        "ede_text": ("ede_text", _ede_text),
    },
    "notice": {
        "template": ("notice_template", _template),
        "languages": ("languages", _languages),
    },
    "hits": {
        "retention_days": ("hit_retention_days", _int_range(1, 3650)),
        "client_anonymisation": ("client_anonymisation", _enum(Anonymisation)),
    },
    "nft": {
        "action": ("nft_action", _enum(NftAction)),
    },
    "deadline": {
        "amount": ("deadline_amount", _int_range(1, 100_000)),
        "unit": ("deadline_unit", _enum(DeadlineUnit)),
    },
}


def load_policy(path: Path) -> EnforcementPolicy:
    name = path.stem
    if not _NAME.match(name):
        raise PolicyFileError(f"{path}: file name must be a-z, 0-9, _ and - (.toml)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyFileError(f"{path}: cannot read ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyFileError(f"{path}: {exc}") from None
    values: dict[str, Any] = {}
    for key, value in data.items():
        section: str | None = None
        items: list[tuple[str, Any]] = [(key, value)]
        if isinstance(value, dict):
            if key not in _SCHEMA:
                raise PolicyFileError(f"{path}: {key}: unknown section")
            section, items = key, list(value.items())
        for k, v in items:
            where = f"{section}.{k}" if section else k
            spec = _SCHEMA[section].get(k)
            if spec is None:
                raise PolicyFileError(f"{path}: {where}: unknown key")
            attr, check = spec
            try:
                values[attr] = check(v)
            except ValueError as exc:
                raise PolicyFileError(f"{path}: {where}: {exc}") from None
    amount = values.pop("deadline_amount", None)
    unit = values.pop("deadline_unit", None)
    if (amount is None) != (unit is None):
        missing = "deadline.unit" if unit is None else "deadline.amount"
        raise PolicyFileError(f"{path}: {missing}: required when the other deadline key is set")
    deadline = Deadline(amount, unit) if amount is not None else None
    values.setdefault("notice_template", name)
    return EnforcementPolicy(name=name, deadline=deadline, **values)


def load_policies(directory: Path) -> dict[str, EnforcementPolicy]:
    """Every ``*.toml`` in ``directory``; ``default.toml`` must be among them."""
    if not directory.is_dir():
        raise PolicyFileError(f"{directory}: policies directory not found")
    policies = {p.stem: load_policy(p) for p in sorted(directory.glob("*.toml"))}
    if "default" not in policies:
        raise PolicyFileError(f"{directory}: default.toml is missing")
    return policies


def default_policies_dir() -> Path:
    """The repository's policies/ (editable install), else the installed share dir."""
    here = Path(__file__).resolve().parent.parent / "policies"
    return here if here.is_dir() else Path(sys.prefix) / "share" / "blockd" / "policies"
