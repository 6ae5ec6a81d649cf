"""Dates and instants as engineers type them, resolved in the order's time zone.

Court orders speak in local calendar dates ("until 31 December"): a bare date is read in
the time zone of the order's policy, and an end date covers that whole day. Everything is
stored as an aware UTC instant so comparisons never depend on the machine's zone.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from blockd.core.model import InputError


def zone(name: str, field: str = "timezone") -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(field, f"unknown time zone {name!r}") from None


def parse_date(text: str, field: str) -> date:
    """A calendar date, strictly ``YYYY-MM-DD``."""
    try:
        value = date.fromisoformat(text.strip())
    except ValueError:
        raise InputError(field, f"{text!r} is not a date (YYYY-MM-DD)") from None
    if not 1900 <= value.year <= 2999:
        raise InputError(field, f"{text!r} is out of range")
    return value


def parse_day(text: str, field: str, today: date) -> date:
    """A UTC day: ``YYYY-MM-DD``, ``today``, ``yesterday`` or ``Nd`` (N days before today)."""
    raw = text.strip().lower()
    if raw == "today":
        return today
    if raw == "yesterday":
        return today - timedelta(days=1)
    if raw.endswith("d") and raw[:-1].isdigit() and len(raw) <= 6:
        return today - timedelta(days=int(raw[:-1]))
    if len(raw) != 10:
        raise InputError(field, f"{text!r} is not a day (YYYY-MM-DD, today, yesterday, Nd)")
    return parse_date(raw, field)


def parse_instant(
    text: str, field: str, tz: ZoneInfo | None = None, *, end_of_day: bool = False,
    now: datetime | None = None,
) -> datetime:
    """Parse ``now``, ``YYYY-MM-DD``, ``HH:MM`` (today) or an ISO 8601 date-time into an
    aware UTC datetime.

    A bare date is midnight in ``tz`` at its start, or at the end of that day when
    ``end_of_day`` (for "until" bounds, which are exclusive). A date-time without an
    offset is read in ``tz``.
    """
    tz = tz or ZoneInfo("UTC")
    raw = text.strip()
    if raw.lower() == "now":
        return (now or datetime.now(UTC)).astimezone(UTC)
    if len(raw) in (5, 8) and raw[2] == ":":  # HH:MM[:SS]: today, in tz
        try:
            clock = time.fromisoformat(raw)
        except ValueError:
            raise InputError(field, f"{text!r} is not a time of day (HH:MM)") from None
        today = (now or datetime.now(UTC)).astimezone(tz).date()
        return datetime.combine(today, clock, tz).astimezone(UTC)
    if len(raw) == 10:
        day = parse_date(raw, field)
        if end_of_day:
            day = day + timedelta(days=1)
        return datetime.combine(day, time(0), tz).astimezone(UTC)
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise InputError(
            field, f"{text!r} is not a date or date-time (YYYY-MM-DD or YYYY-MM-DDTHH:MM[+ZZ:ZZ])"
        ) from None
    if not 1900 <= value.year <= 2999:
        raise InputError(field, f"{text!r} is out of range")
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value.astimezone(UTC)


def to_utc(value: datetime) -> datetime:
    """Treat naive datetimes (as SQLite returns them) as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso(value: datetime | date | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return to_utc(value).isoformat().replace("+00:00", "Z")
    return value.isoformat()
