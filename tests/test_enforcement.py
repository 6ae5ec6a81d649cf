"""Enforcement policy files: the shipped ones load; every mistake is named precisely."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockd.config import PolicyFileError, default_policies_dir, load_policies, load_policy
from blockd.core.enforcement import Anonymisation, Deadline, DeadlineUnit
from blockd.core.model import Action

CPH = ZoneInfo("Europe/Copenhagen")


def test_shipped_policies() -> None:
    p = load_policies(default_policies_dir())
    assert sorted(p) == ["de", "default", "dk", "it", "uk"]
    assert (p["dk"].jurisdiction, p["dk"].timezone, str(p["dk"].deadline)) == (
        "DK", "Europe/Copenhagen", "7 working days")
    assert p["it"].dns_action is Action.NXDOMAIN and str(p["it"].deadline) == "30 minutes"
    assert str(p["uk"].deadline) == "14 days" and p["uk"].jurisdiction == "GB"
    assert p["de"].deadline is None
    assert all(x.dns_ttl == 30 for x in p.values())
    assert p["default"].client_anonymisation is Anonymisation.HASH
    assert "FI-1" in p["dk"].ede("FI-1", "Byret", "https://isp.example/")


@pytest.mark.parametrize(
    ("body", "where", "problem"),
    [
        ('colour = "red"\n', "colour", "unknown key"),
        ("[dnz]\nttl = 3\n", "dnz", "unknown section"),
        ("[dns]\nttl = \"thirty\"\n", "dns.ttl", "integer between 1 and 86400"),
        ("[dns]\nttl = 0\n", "dns.ttl", "integer between 1 and 86400"),
        ("[dns]\naction = \"blackhole\"\n", "dns.action", "one of notice, nxdomain"),
        ("[dns]\nttl = 30\nretries = 2\n", "dns.retries", "unknown key"),
        ('timezone = "Mars/Olympus"\n', "timezone", "unknown IANA time zone"),
        ('jurisdiction = "dk"\n', "jurisdiction", "two-letter code"),
        ("[notice]\nlanguages = [\"english\"]\n", "notice.languages", "language codes"),
        ("[notice]\nlanguages = []\n", "notice.languages", "non-empty"),
        ("[notice]\ntemplate = \"../etc/passwd\"\n", "notice.template", "template name"),
        ('[dns]\nede_text = "see {secret}"\n', "dns.ede_text", "unknown placeholder {secret}"),
        ('[dns]\nede_text = "broken {reference"\n', "dns.ede_text", "bad braces"),
        ("[deadline]\namount = 7\nunit = \"fortnights\"\n", "deadline.unit", "one of minutes"),
        ("[deadline]\namount = 7\n", "deadline.unit", "required"),
        ("[hits]\nclient_anonymisation = \"blur\"\n", "hits.client_anonymisation", "one of"),
        ("[dns\n", "line 1", ""),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, body: str, where: str, problem: str) -> None:
    path = tmp_path / "xx.toml"
    path.write_text(body)
    with pytest.raises(PolicyFileError) as exc:
        load_policy(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: ") and where in message and problem in message
    assert "\n" not in message


def test_directory_needs_default(tmp_path: Path) -> None:
    (tmp_path / "dk.toml").write_text("")
    with pytest.raises(PolicyFileError, match=r"default\.toml is missing"):
        load_policies(tmp_path)
    (tmp_path / "Bad Name.toml").write_text("")
    (tmp_path / "default.toml").write_text("")
    with pytest.raises(PolicyFileError, match="file name"):
        load_policies(tmp_path)


def test_empty_file_takes_defaults(tmp_path: Path) -> None:
    (tmp_path / "default.toml").write_text("")
    p = load_policies(tmp_path)["default"]
    assert (p.dns_action, p.dns_ttl, p.languages, p.deadline) == (Action.NOTICE, 30, ("en",),
                                                                   None)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_deadlines() -> None:
    seven = Deadline(7, DeadlineUnit.WORKING_DAYS)
    # Friday afternoon in Copenhagen -> the second Tuesday after (weekends skipped)
    assert seven.due(at("2026-11-20T15:00+01:00"), CPH) == at("2026-12-01T15:00+01:00")
    # received on a Saturday: counting starts on Monday 00:00
    assert seven.due(at("2026-11-21T11:00+01:00"), CPH) == at("2026-12-02T00:00+01:00")
    # across the end of summer time the local time of day is kept
    assert Deadline(2, DeadlineUnit.WORKING_DAYS).due(at("2026-10-23T09:00+02:00"), CPH) == \
        at("2026-10-27T09:00+01:00")
    assert Deadline(30, DeadlineUnit.MINUTES).due(at("2026-11-20T15:00Z"), CPH) == \
        at("2026-11-20T15:30Z")
    assert Deadline(14, DeadlineUnit.DAYS).due(at("2026-11-20T15:00Z"), CPH) == \
        at("2026-12-04T15:00Z")
    assert str(Deadline(1, DeadlineUnit.HOURS)) == "1 hour"


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                    timezones=st.just(UTC)),
       st.integers(1, 30), st.integers(0, 10_000))
def test_working_days_after_and_monotonic(received: datetime, n: int, later_min: int) -> None:
    d = Deadline(n, DeadlineUnit.WORKING_DAYS)
    due = d.due(received, CPH)
    assert due > received
    assert due.astimezone(CPH).weekday() < 5
    assert d.due(received + timedelta(minutes=later_min), CPH) >= due
