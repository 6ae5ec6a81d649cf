"""Enforcement policy files: the shipped ones load; every mistake is named precisely."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from blockd.config import PolicyFileError, default_policies_dir, load_policies, load_policy
from blockd.core.enforcement import Anonymisation, Deadline, DeadlineUnit, NftAction
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


# One bad value for every key of a policy file: (section or "", key, TOML value, problem).
POLICY_BAD_VALUES = [
    ("", "description", "1", "must be a string, got 1"),
    ("", "jurisdiction", "'DNK'", "must be an ISO 3166 two-letter code in capitals, got 'DNK'"),
    ("", "timezone", "'Europe/Atlantis'", "unknown IANA time zone 'Europe/Atlantis'"),
    ("dns", "action", "'drop'", "must be one of notice, nxdomain, nodata, refused, got 'drop'"),
    ("dns", "ttl", "86401", "must be an integer between 1 and 86400, got 86401"),
    ("dns", "ede_text", "'{url'", "bad braces in template"),
    ("dns", "block_cname_chains", "'no'", "must be true or false, got 'no'"),
    ("notice", "template", "'Default'", "must be a template name of a-z, 0-9, _ and -, got"),
    ("notice", "languages", "['en', 1]", "must be a non-empty list of two-letter language codes"),
    ("hits", "retention_days", "3651", "must be an integer between 1 and 3650, got 3651"),
    ("hits", "client_anonymisation", "'mask'", "must be one of none, truncate, hash, drop"),
    ("nft", "action", "'accept'", "must be one of drop, reject, notice, got 'accept'"),
    ("deadline", "amount", "0\nunit = 'days'", "must be an integer between 1 and 100000, got 0"),
    ("deadline", "unit", "'weeks'\namount = 1",
     "must be one of minutes, hours, days, working_days, got 'weeks'"),
    # strict: no coercion from strings or booleans
    ("dns", "ttl", "true", "must be an integer between 1 and 86400, got True"),
    ("dns", "ttl", "'30'", "must be an integer between 1 and 86400, got '30'"),
    ("dns", "ttl", "30.0", "must be an integer between 1 and 86400, got 30.0"),
    ("dns", "ede_text", "1", "must be a string, got 1"),
    ("deadline", "amount", "'7'\nunit = 'days'", "must be an integer between 1 and 100000"),
    ("deadline", "unit", "'DAYS'\namount = 1", "must be one of minutes, hours, days, working_"),
    ("", "jurisdiction", "'dk'", "must be an ISO 3166 two-letter code in capitals, got 'dk'"),
]
POLICY_SECTIONS = sorted({s for s, *_ in POLICY_BAD_VALUES})


def policy_error(path: Path, body: str) -> str:
    path.write_text(body)
    with pytest.raises(PolicyFileError) as exc:
        load_policy(path)
    message = str(exc.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("section", "key", "value", "problem"), POLICY_BAD_VALUES)
def test_each_bad_policy_value_is_one_line(tmp_path: Path, section: str, key: str, value: str,
                                           problem: str) -> None:
    path = tmp_path / "xx.toml"
    header = f"[{section}]\n" if section else ""
    where = f"{section}.{key}" if section else key
    message = policy_error(path, f"{header}{key} = {value}\n")
    assert message.startswith(f"{path}: {where}: {problem}")


def test_every_policy_key_has_a_bad_value_case() -> None:
    """The table above covers the schema: a new key needs a case here."""
    from pydantic import BaseModel

    from blockd.config_schema import _PolicyFile

    declared = set()
    for name, field in _PolicyFile.model_fields.items():
        table = field.annotation
        if isinstance(table, type) and issubclass(table, BaseModel):
            declared |= {(name, f.alias or n) for n, f in table.model_fields.items()}
        elif name != "deadline":
            declared.add(("", name))
    declared |= {("deadline", "amount"), ("deadline", "unit")}  # an optional table
    assert declared == {(s, k) for s, k, *_ in POLICY_BAD_VALUES}


@pytest.mark.parametrize("missing", ["amount", "unit"])
def test_deadline_keys_go_together(tmp_path: Path, missing: str) -> None:
    path = tmp_path / "xx.toml"
    given_key = "unit = 'days'" if missing == "amount" else "amount = 3"
    message = policy_error(path, f"[deadline]\n{given_key}\n")
    assert message == f"{path}: deadline.{missing}: required when [deadline] is present"


@pytest.mark.parametrize("section", [s for s in POLICY_SECTIONS if s])
def test_unknown_key_in_each_policy_section(tmp_path: Path, section: str) -> None:
    path = tmp_path / "xx.toml"
    extra = "amount = 1\nunit = 'days'\n" if section == "deadline" else ""
    message = policy_error(path, f"[{section}]\n{extra}bogus = 1\n")
    assert message == f"{path}: {section}.bogus: unknown key"


def test_policy_values_are_converted(tmp_path: Path) -> None:
    path = tmp_path / "xx.toml"
    path.write_text("[notice]\nlanguages = ['da', 'en']\n[deadline]\namount = 2\nunit = 'hours'\n"
                    "[nft]\naction = 'drop'\n")
    p = load_policy(path)
    assert (p.name, p.notice_template, p.languages) == ("xx", "xx", ("da", "en"))
    assert p.deadline == Deadline(2, DeadlineUnit.HOURS) and p.nft_action is NftAction.DROP
    assert p.dns_ttl == 30 and p.jurisdiction is None


POLICY_KEY = st.from_regex(r"[a-z][a-z0-9_-]{0,20}", fullmatch=True)


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(POLICY_SECTIONS), POLICY_KEY, st.sampled_from(["1", "'x'", "true", "[]"]))
def test_any_unknown_policy_key_is_refused_by_name(tmp_path_factory: pytest.TempPathFactory,
                                                   section: str, key: str, value: str) -> None:
    known = {(s, k) for s, k, *_ in POLICY_BAD_VALUES} | {("", s) for s in POLICY_SECTIONS}
    assume((section, key) not in known)
    path = tmp_path_factory.mktemp("pol") / "xx.toml"
    header = f"[{section}]\n" if section else ""
    if section == "deadline":  # required keys are reported before unknown ones
        header += "amount = 1\nunit = 'days'\n"
    where = f"{section}.{key}" if section else key
    message = policy_error(path, f"{header}{key} = {value}\n")
    assert message.startswith(f"{path}: {where}: unknown key")
