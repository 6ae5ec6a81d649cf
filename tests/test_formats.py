"""Import/export formats: parsing with line numbers, round trips, hostile input."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockd.core.model import Action, DomainMatch, InputError, Target, TargetKind
from blockd.core.names import parse_target
from blockd.formats import FORMATS, ExportEntry, FormatError, csvlist, plainlist, rpz


def specs(targets: list[Target]) -> list[str]:
    return [t.spec for t in targets]


def test_plain_list() -> None:
    text = "\ufeff# mirrors\r\nAllOfMP3.com\r\n\r\nbücher.example  # idn\n=exact.example\n" \
           "*.wild.example\n2A01:4F8::/48\n45.33.32.9/24\nallofmp3.com\n"
    assert specs(plainlist.parse(text)) == [
        "allofmp3.com", "xn--bcher-kva.example", "=exact.example", "*.wild.example",
        "2a01:4f8::/48", "45.33.32.0/24"]
    with pytest.raises(FormatError) as exc:
        plainlist.parse("ok.example\n\n# c\nnot valid!\n")
    assert exc.value.field == "line 4" and "not a valid host name" in str(exc.value)


def test_csv() -> None:
    text = "Domain,reason\nallofmp3.com,clone\n\"www.mp3sparks.com\",x\n,\n45.33.32.1,ip\n"
    assert specs(csvlist.parse(text)) == ["allofmp3.com", "www.mp3sparks.com", "45.33.32.1"]
    with pytest.raises(FormatError, match="no target column"):
        csvlist.parse("host,reason\nx.example,y\n")
    with pytest.raises(FormatError) as exc:
        csvlist.parse("target\nok.example\nbad..example\n")
    assert exc.value.line == 3
    with pytest.raises(FormatError, match="empty target cell"):
        csvlist.parse("target,b\n,x\n")
    with pytest.raises(FormatError, match="header row"):
        csvlist.parse("")


ZONE = """$TTL 30
$ORIGIN rpz.example.
@ IN SOA ns.example. hostmaster.example. (
        1 ; serial
        3600 600 86400 30 )
  IN NS ns.example.
allofmp3.com CNAME .
*.allofmp3.com CNAME .
exact.example 300 IN A 192.0.2.80
*.wild.example CNAME *.
ok.example CNAME rpz-passthru.
32.2.0.0.10.rpz-ip CNAME .
24.0.2.0.192.rpz-ip CNAME .
48.zz.db8.2001.rpz-ip CNAME .
xn--bcher-kva.example.rpz.example. CNAME notice.isp.example.
"""


def test_rpz_parse() -> None:
    assert specs(rpz.parse(ZONE)) == [
        "allofmp3.com", "=exact.example", "*.wild.example", "=xn--bcher-kva.example",
        "10.0.0.2", "192.0.2.0/24", "2001:db8::/48"]


@pytest.mark.parametrize(
    ("zone", "line", "problem"),
    [
        ("$ORIGIN z.\nbad..name CNAME .\n", 2, "empty label"),
        ("$ORIGIN z.\nx.nsdname.rpz-nsdname CNAME .\n", 2, "unsupported trigger"),
        ("$ORIGIN z.\nfoo.other. CNAME .\n", 2, "outside the zone"),
        ("$ORIGIN z.\n@ SOA a. b. ( 1 2 3 4 5\n", 2, "never closed"),
        ("$INCLUDE other.zone\n", 1, "unsupported directive"),
        ("$ORIGIN z.\nname BOGUS data\n", 2, "no record type"),
        ("$ORIGIN z.\n99.1.2.3.4.rpz-ip CNAME .\n", 2, "rpz-ip"),
    ],
)
def test_rpz_errors(zone: str, line: int, problem: str) -> None:
    with pytest.raises(FormatError) as exc:
        rpz.parse(zone)
    assert exc.value.line == line and problem in str(exc.value)


@pytest.mark.parametrize(("target", "owner"), [
    ("10.0.0.2", "32.2.0.0.10.rpz-ip"), ("192.0.2.0/24", "24.0.2.0.192.rpz-ip"),
    ("2001:db8::/48", "48.zz.db8.2001.rpz-ip"), ("2001:db8::1", "128.1.zz.db8.2001.rpz-ip"),
])
def test_rpz_ip_encoding(target: str, owner: str) -> None:
    assert rpz.rpz_ip_owner(parse_target(target)) == owner


label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
domains = st.builds(lambda ls, tld, p: p + ".".join([*ls, tld]),
                    st.lists(label, min_size=1, max_size=3),
                    st.from_regex(r"[a-z]{2,5}", fullmatch=True), st.sampled_from(["", "=", "*."]))
addresses = st.one_of(
    st.ip_addresses().map(str),
    st.tuples(st.ip_addresses(v=4), st.integers(8, 32)).map(lambda t: f"{t[0]}/{t[1]}"),
    st.tuples(st.ip_addresses(v=6), st.integers(16, 128)).map(lambda t: f"{t[0]}/{t[1]}"),
)
target_sets = st.sets(st.one_of(domains, addresses).map(parse_target), max_size=25)


@given(target_sets, st.sampled_from(sorted(FORMATS)))
def test_round_trip(targets: set[Target], fmt: str) -> None:
    entries = [ExportEntry(t, Action.NXDOMAIN, "R-1", "Court") for t in sorted(targets)]
    module = FORMATS[fmt]
    text = module.render(entries, generated_at=datetime(2026, 1, 1, tzinfo=UTC), serial=7)
    back = set(module.parse(text))
    if fmt == "rpz":  # one owner per name: overlapping targets of a name merge into one
        assert back == rpz_coverage(targets)
    else:
        assert back == targets


def rpz_coverage(targets: set[Target]) -> set[Target]:
    """What RPZ can express: per name, the union of its targets' coverage."""
    modes: dict[str, set[DomainMatch]] = {}
    out = {t for t in targets if t.kind is not TargetKind.DOMAIN}
    for t in targets:
        if t.kind is TargetKind.DOMAIN:
            modes.setdefault(t.value, set()).add(t.match)
    for name, m in modes.items():
        if DomainMatch.SUBTREE in m or m == {DomainMatch.EXACT, DomainMatch.WILDCARD}:
            out.add(Target(TargetKind.DOMAIN, name))
        else:
            out.add(Target(TargetKind.DOMAIN, name, m.pop()))
    return out


@given(st.text(max_size=300), st.sampled_from(sorted(FORMATS)))
def test_hostile_text_only_raises_format_errors(text: str, fmt: str) -> None:
    with contextlib.suppress(InputError):
        FORMATS[fmt].parse(text)


@given(st.lists(st.sampled_from(ZONE.splitlines()), max_size=20), st.text(max_size=20))
def test_mutated_zones_only_raise_format_errors(lines: list[str], junk: str) -> None:
    with contextlib.suppress(InputError):
        rpz.parse("\n".join(lines) + junk)
