"""Import/export formats: parsing with line numbers, round trips, hostile input, and the
exported RPZ zone checked by BIND's and Unbound's own loaders (and a live Unbound)."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from dnsstub import StubUpstream
from hypothesis import given, settings
from hypothesis import strategies as st

from blockd.core.model import Action, DomainMatch, InputError, Target, TargetKind
from blockd.core.names import parse_target
from blockd.formats import FORMATS, ExportEntry, FormatError, csvlist, plainlist, rpz

AT = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
NOTICE4, NOTICE6 = "192.0.2.80", "2001:db8:ffff::80"


def specs(targets: list[Target]) -> list[str]:
    return [t.spec for t in targets]


def entry(spec: str, action: Action = Action.NXDOMAIN, reference: str = "R-1",
          authority: str = "Court") -> ExportEntry:
    return ExportEntry(parse_target(spec), action, reference, authority)


def render_rpz(entries: list[ExportEntry], *, serial: int = 7, origin: str = "rpz.blockd.",
               notice_ipv4: str | None = NOTICE4, notice_ipv6: str | None = NOTICE6,
               ttl: int = 30, soa_contact: str = "hostmaster.invalid.") -> str:
    return rpz.render(entries, origin=origin, serial=serial, notice_ipv4=notice_ipv4,
                      notice_ipv6=notice_ipv6, ttl=ttl, soa_contact=soa_contact)


def failure(parse: Callable[[str], list[Target]], text: str) -> FormatError:
    with pytest.raises(FormatError) as exc:
        parse(text)
    err = exc.value
    assert str(err) == f"line {err.line}: {err.reason}" and err.field == f"line {err.line}"
    assert "\n" not in str(err) and "\r" not in str(err)
    return err


# -- plain list ----------------------------------------------------------------------


def test_plain_list() -> None:
    text = ("\ufeff# mirrors\r\nAllOfMP3.com\r\n\r\nbücher.example  # idn\n=exact.example\n"
            "*.wild.example\n   \t\n2A01:4F8::/48\n45.33.32.9/24\nallofmp3.com\n"
            "2001:DB8:0:0::1 # trailing\n")
    assert specs(plainlist.parse(text)) == [
        "allofmp3.com", "xn--bcher-kva.example", "=exact.example", "*.wild.example",
        "2a01:4f8::/48", "45.33.32.0/24", "2001:db8::1"]
    assert plainlist.parse("") == [] and plainlist.parse("\ufeff# only a comment\n") == []
    # the Unicode and punycode spellings of a name are one target
    assert specs(plainlist.parse("xn--bcher-kva.example\nBÜCHER.example\n")) == [
        "xn--bcher-kva.example"]


@pytest.mark.parametrize(("text", "line", "shown"), [
    ("ok.example\n\n# c\nnot valid!\n", 4, "'not valid!'"),
    ("ok.example\r\nhttp://x.example/a\r\n", 2, "http://x.example/a"),
    ("a.example\nb.example\r1.2.3.4/33\n", 3, "1.2.3.4/33"),
    ("300.1.2.3 # typo\n", 1, "300.1.2.3"),
    ("*.a*b.example\n", 1, "*.a*b.example"),
    ("two names.example\n", 1, "two names.example"),
    ("\ufeffx" * 1 + "\n=bad..example\n", 2, "bad..example"),
    ("a\x00b.example\n", 1, "a\\x00b.example"),
])
def test_plain_list_errors(text: str, line: int, shown: str) -> None:
    err = failure(plainlist.parse, text)
    assert err.line == line and shown in str(err)


def test_plain_list_render() -> None:
    entries = [entry("zz.example"), entry("=a.example"), entry("10.0.0.1"),
               entry("zz.example", reference="R-2"), entry("*.a.example")]
    text = plainlist.render(entries, generated_at=AT)
    assert text.splitlines() == [
        "# blockd export 2026-01-01T12:00:00Z",
        "=a.example", "*.a.example", "zz.example", "10.0.0.1"]
    assert set(plainlist.parse(text)) == {e.target for e in entries}
    assert plainlist.render([], generated_at=AT) == "# blockd export 2026-01-01T12:00:00Z\n"


# -- csv -----------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["target", "Domain", " IP ", "FQDN"])
def test_csv_target_column_names(header: str) -> None:
    text = f"reason,{header},date\r\nclone,allofmp3.com,2024\r\n"
    assert specs(csvlist.parse(text)) == ["allofmp3.com"]


def test_csv() -> None:
    text = ("\ufeffDomain,reason\nallofmp3.com,clone\n\"www.mp3sparks.com\",\"x, y\"\n,\n"
            "\n45.33.32.1,ip\nbücher.example,idn\n2001:DB8::/32,v6\nALLOFMP3.COM,dup\n")
    assert specs(csvlist.parse(text)) == [
        "allofmp3.com", "www.mp3sparks.com", "45.33.32.1", "xn--bcher-kva.example",
        "2001:db8::/32"]
    # "target" wins over "domain" whatever the column order; other columns are ignored
    assert specs(csvlist.parse("domain,target\nno.example,yes.example\n")) == ["yes.example"]
    # a quoted cell spanning lines still numbers later rows by their physical line
    err = failure(csvlist.parse, 'target,note\nok.example,"two\nlines"\nbad..example,x\n')
    assert err.line == 4


@pytest.mark.parametrize(("text", "line", "problem"), [
    ("host,reason\nx.example,y\n", 1, "no target column in header 'host,reason'"),
    ("\n\nhost\n", 3, "no target column"),
    ("target,b\n,x\n", 2, "empty target cell"),
    ("a,b,target\nx,y\n", 2, "empty target cell in row 'x,y'"),
    ("target\nok.example\nbad..example\n", 3, "'bad..example' has an empty label"),
    ("target\n# a comment is just a row\n", 2, "# a comment is just a row"),
    ("", 1, "header row"),
    ("\n,,\n", 1, "header row"),
    ('target\nok.example\n"' + "a" * 200_000 + '"\n', 3, "not valid CSV"),
])
def test_csv_errors(text: str, line: int, problem: str) -> None:
    err = failure(csvlist.parse, text)
    assert err.line == line and problem in str(err)


def test_csv_render() -> None:
    entries = [entry("allofmp3.com", Action.NOTICE, "RG 2008/1", 'Court "A", Rome'),
               entry("=exact.example", Action.NODATA, "R-2", "line\nbreak"),
               entry("2001:db8::/48", Action.REFUSED)]
    text = csvlist.render(entries)
    lines = text.splitlines()
    assert lines[0] == "reference,authority,kind,target,match,action"
    assert lines[1] == 'RG 2008/1,"Court ""A"", Rome",domain,allofmp3.com,subtree,notice'
    assert lines[-1] == "R-1,Court,prefix,2001:db8::/48,subtree,refused"
    assert csvlist.parse(text) == [e.target for e in entries]


# -- rpz: import ----------------------------------------------------------------------

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
        "allofmp3.com", "=exact.example", "*.wild.example", "10.0.0.2", "192.0.2.0/24",
        "2001:db8::/48", "=xn--bcher-kva.example"]


def test_rpz_parse_syntax() -> None:
    """Master-file syntax a third-party feed may use, and actions that are not blocks."""
    zone = (
        "\ufeff; no $ORIGIN: the server's configuration names the zone\r\n"
        "$TTL 1h30m\r\n"
        "@ 3600 IN SOA ns hostmaster 2024010101 1h 15m 1w 30 ; one line\r\n"
        "@ NS ns\r\n"
        "@ RRSIG SOA 8 2 3600 20300101000000 20200101000000 1 rpz. AAAA\r\n"
        "drop.example IN 60 CNAME rpz-drop.\r\n"
        "  RRSIG CNAME 8 3 60 20300101000000 20200101000000 1 rpz. AAAA\r\n"
        "tcp.example CNAME rpz-tcp-only.\r\n"
        "old.example CNAME old.example. ; the old passthru form\r\n"
        "Local.Example AAAA 2001:db8::80\r\n"
        "  A 192.0.2.80\r\n"
        "  TXT \"blocked; see (order) \\\"R-1\\\"\"\r\n"
        "bücher.example CNAME .\r\n"
        "*.xn--bcher-kva.example CNAME .\r\n"
        "128.1.zz.db8.2001.rpz-ip CNAME .\r\n"
        "64.0.0.0.0.0.ff.db8.2001.rpz-ip CNAME .\r\n"
        "sub CNAME .\r\n"
        "$ORIGIN sub\r\n"
        "deeper CNAME *.\r\n"
    )
    assert specs(rpz.parse(zone)) == [
        "=drop.example", "=local.example", "xn--bcher-kva.example", "2001:db8::1",
        "2001:db8:ff::/64", "=sub", "=deeper.sub"]


def test_rpz_parse_apex_from_absolute_soa() -> None:
    zone = ("rpz.example. SOA ns. h. 1 2 3 4 5\nrpz.example. NS ns.\n"
            "a.example.rpz.example. CNAME .\nb.example CNAME .\n")
    assert specs(rpz.parse(zone)) == ["=a.example", "=b.example"]


@pytest.mark.parametrize(("zone", "line", "problem"), [
    ("$ORIGIN z.\nbad..name CNAME .\n", 2, "'bad..name' has an empty label"),
    ("$ORIGIN z.\nbad..z. CNAME .\n", 2, "empty label"),
    ("$ORIGIN z.\n*.*.x CNAME .\n", 2, "wildcard is only allowed as a leading"),
    ("$ORIGIN z.\nx.nsdname.rpz-nsdname CNAME .\n", 2, "unsupported trigger"),
    ("$ORIGIN z.\n32.1.0.0.10.rpz-nsip CNAME .\n", 2, "unsupported trigger"),
    ("$ORIGIN z.\n32.1.0.0.10.rpz-client-ip CNAME rpz-drop.\n", 2, "unsupported trigger"),
    ("$ORIGIN z.\nx.rpz-foo CNAME .\n", 2, "unknown trigger"),
    ("$ORIGIN z.\nok CNAME .\nfoo.other. CNAME .\n", 3, "'foo.other.' is outside the zone"),
    ("@ SOA a b 1 2 3 4 5\nfoo.other. CNAME .\n", 2, "outside the zone '@'"),
    ("$ORIGIN z.\n@ SOA a. b. ( 1 2 3 4 5\n", 2, "never closed"),
    ("$ORIGIN z.\nx CNAME . )\n", 2, "unbalanced ')'"),
    ("$ORIGIN z.\nx TXT \"open\n", 2, "unterminated quoted string"),
    ("$INCLUDE /etc/passwd\n", 1, "unsupported directive '$INCLUDE'"),
    ("$GENERATE 1-9 x$ CNAME .\n", 1, "unsupported directive"),
    ("$ORIGIN\n", 1, "$ORIGIN needs exactly one name"),
    ("$TTL soon\n", 1, "$TTL needs one TTL"),
    ("$ORIGIN z.\nname BOGUS data\n", 2, "unknown record type 'BOGUS'"),
    ("$ORIGIN z.\nname 30 IN\n", 2, "record without a type"),
    ("$ORIGIN z.\nname CNAME\n", 2, "CNAME record without data"),
    ("$ORIGIN z.\nname CNAME a. b.\n", 2, "CNAME needs 1 field"),
    ("$ORIGIN z.\nname A 300.1.2.3\n", 2, "'300.1.2.3' is not an IPv4 address"),
    ("$ORIGIN z.\nname AAAA 192.0.2.1\n", 2, "not an IPv6 address"),
    ("$ORIGIN z.\n@ SOA a. b. 1 2 3 4\n", 2, "SOA needs 7 field"),
    ("$ORIGIN z.\n@ SOA a. b. 1 2 3 4 5\n@ SOA a. b. 1 2 3 4 5\n", 3, "a second SOA"),
    ("$ORIGIN z.\nsub NS ns.example.\n", 2, "NS below the zone apex"),
    ("$ORIGIN z.\n@ CNAME .\n", 2, "at the zone apex"),
    ("$ORIGIN z.\n* CNAME .\n", 2, "wildcard at the zone apex"),
    ("  CNAME .\n", 1, "record without an owner name"),
    ("$ORIGIN z.\n99.1.2.3.4.rpz-ip CNAME .\n", 2, "bad rpz-ip trigger '99.1.2.3.4.rpz-ip'"),
    ("$ORIGIN z.\n24.1.2.0.192.rpz-ip CNAME .\n", 2, "host bits set"),
    ("$ORIGIN z.\n24.2.0.192.rpz-ip CNAME .\n", 2, "4 (IPv4) or 8 (IPv6) labels"),
    ("$ORIGIN z.\n32.01.0.0.10.rpz-ip CNAME .\n", 2, "bad rpz-ip trigger"),
    ("$ORIGIN z.\n48.zz.db8.zz.rpz-ip CNAME .\n", 2, "bad rpz-ip trigger"),
    ("$ORIGIN z.\n48.g.zz.rpz-ip CNAME .\n", 2, "labels are decimal octets or hex groups"),
    ("$ORIGIN z.\n3².1.0.0.10.rpz-ip CNAME .\n", 2, "expected <prefix length>"),
    ("$ORIGIN z.\n" + "9" * 5000 + ".1.0.0.10.rpz-ip CNAME .\n", 2, "bad rpz-ip trigger"),
    ("$ORIGIN z.\nrpz-ip CNAME .\n", 2, "bad rpz-ip trigger"),
    ("$ORIGIN z.\n" + "a" * 64 + ".example CNAME .\n", 2, "longer than 63"),
    ("$ORIGIN z.\nok CNAME .\n\n\nx.example. ( CNAME\n .\n )\n", 5, "outside the zone"),
])
def test_rpz_errors(zone: str, line: int, problem: str) -> None:
    err = failure(rpz.parse, zone)
    assert err.line == line and problem in str(err)


# -- rpz: export -----------------------------------------------------------------------


@pytest.mark.parametrize(("target", "owner"), [
    ("10.0.0.2", "32.2.0.0.10.rpz-ip"), ("192.0.2.0/24", "24.0.2.0.192.rpz-ip"),
    ("2001:db8::/48", "48.zz.db8.2001.rpz-ip"), ("2001:db8::1", "128.1.zz.db8.2001.rpz-ip"),
    ("::/0", "0.zz.rpz-ip"), ("2001:db8:0:1:1:1:1:1", "128.1.1.1.1.1.0.db8.2001.rpz-ip"),
    ("2001:0:0:1::/64", "64.zz.1.0.0.2001.rpz-ip"),
])
def test_rpz_ip_encoding(target: str, owner: str) -> None:
    """The standards.md examples, and the owner parses back to the same target."""
    t = parse_target(target)
    assert rpz.rpz_ip_owner(t) == owner
    assert rpz.parse(f"$ORIGIN rpz.\n{owner} CNAME .\n") == [t]


def every_kind() -> list[ExportEntry]:
    """Domains, exact, wildcard, IPv4, IPv6, prefixes, and all four actions."""
    return [
        entry("nx.example", Action.NXDOMAIN, "R-1", "Tribunale di Milano"),
        entry("=exact.example", Action.NOTICE, "R-1", "Tribunale di Milano"),
        entry("*.wild.example", Action.NODATA, "R-2", "High Court"),
        entry("refused.example", Action.REFUSED, "R-2", "High Court"),
        entry("notice.example", Action.NOTICE, "R-3", "Court\n$INCLUDE /etc/passwd"),
        entry("xn--bcher-kva.example", Action.NODATA, "R-3", "Court"),
        entry("10.0.0.2", Action.NXDOMAIN, "R-4", "AGCOM"),
        entry("203.0.113.0/24", Action.NOTICE, "R-4", "AGCOM"),
        entry("2001:db8::/48", Action.NOTICE, "R-4", "AGCOM"),
        entry("2001:db8:1::7", Action.NODATA, "R-4", "AGCOM"),
        entry("nx.example", Action.NOTICE, "R-5", "Later order: same name, listed once"),
    ]


def test_rpz_render() -> None:
    text = render_rpz(every_kind(), serial=2**32 + 41)
    body = [line for line in text.splitlines() if not line.startswith(";")]
    assert body == [
        "$ORIGIN rpz.blockd.",
        "$TTL 30",
        "@ SOA localhost. hostmaster.invalid. ( 41 3600 600 86400 30 )",
        "@ NS localhost.",
        '@ TXT "4294967337:"',  # the journal head (seq: the serial, unwrapped; no hash)
        "nx.example CNAME .",
        "*.nx.example CNAME .",
        f"exact.example A {NOTICE4}",
        f"exact.example AAAA {NOTICE6}",
        "*.wild.example CNAME *.",
        "refused.example CNAME .",
        "*.refused.example CNAME .",
        f"notice.example A {NOTICE4}",
        f"notice.example AAAA {NOTICE6}",
        f"*.notice.example A {NOTICE4}",
        f"*.notice.example AAAA {NOTICE6}",
        "xn--bcher-kva.example CNAME *.",
        "*.xn--bcher-kva.example CNAME *.",
        "32.2.0.0.10.rpz-ip CNAME .",
        f"24.0.113.0.203.rpz-ip A {NOTICE4}",
        f"48.zz.db8.2001.rpz-ip AAAA {NOTICE6}",
        "128.7.zz.1.db8.2001.rpz-ip CNAME *.",
    ]
    assert "RPZ has no REFUSED" in text
    assert "; order R-3 (Court $INCLUDE /etc/passwd)" in text  # free text stays in a comment
    assert "R-5" not in text  # its only target was already listed under R-1
    assert set(rpz.parse(text)) == {e.target for e in every_kind()}


def test_rpz_render_notice_fallbacks() -> None:
    entries = [entry("a.example", Action.NOTICE), entry("10.0.0.1", Action.NOTICE),
               entry("2001:db8::1", Action.NOTICE)]
    no_v6 = render_rpz(entries, notice_ipv6=None)
    assert f"a.example A {NOTICE4}\n*.a.example A {NOTICE4}\n" in no_v6
    assert f"32.1.0.0.10.rpz-ip A {NOTICE4}\n" in no_v6
    assert "128.1.zz.db8.2001.rpz-ip CNAME .\n" in no_v6  # no A under an IPv6 trigger
    nothing = render_rpz(entries, notice_ipv4=None, notice_ipv6=None)
    assert " A " not in nothing and nothing.count("CNAME .\n") == 4


def test_rpz_render_options() -> None:
    text = render_rpz([entry("x.example")], origin="Policy.ISP.example", ttl=5,
                      soa_contact="dns.isp.example", serial=0)
    assert "$ORIGIN policy.isp.example.\n$TTL 5\n" in text
    assert "@ SOA localhost. dns.isp.example. ( 0 3600 600 86400 5 )" in text
    assert rpz.parse(text) == [parse_target("x.example")]
    with pytest.raises(InputError, match="origin"):
        render_rpz([], origin="bad..origin")
    with pytest.raises(InputError, match="notice_ipv4"):
        render_rpz([], notice_ipv4="2001:db8::1")
    with pytest.raises(InputError, match="notice_ipv6"):
        render_rpz([], notice_ipv6="192.0.2.1")
    with pytest.raises(InputError, match="ttl"):
        render_rpz([], ttl=-1)


def test_rpz_render_leaves_out_what_rpz_cannot_carry() -> None:
    """One impossible owner must not break the zone (that would lift every block)."""
    long_name = ".".join(["a" * 60] * 4)  # 243 characters: fits alone, not under an origin
    text = render_rpz([entry(long_name), entry("evil.rpz-nsdname"), entry("ok.example")])
    assert text.count("; NOT EXPORTED") == 2
    assert rpz.parse(text) == [parse_target("ok.example")]


# -- round trips -----------------------------------------------------------------------

label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
domains = st.one_of(
    st.builds(lambda ls, tld, p: p + ".".join([*ls, tld]),
              st.lists(label, min_size=1, max_size=3),
              st.from_regex(r"[a-z]{2,5}", fullmatch=True), st.sampled_from(["", "=", "*."])),
    st.sampled_from(["bücher.example", "=пример.рф", "*.例え.jp", "straße.de"]),
)
addresses = st.one_of(
    st.ip_addresses().map(str),
    st.tuples(st.ip_addresses(v=4), st.integers(0, 32)).map(lambda t: f"{t[0]}/{t[1]}"),
    st.tuples(st.ip_addresses(v=6), st.integers(0, 128)).map(lambda t: f"{t[0]}/{t[1]}"),
)
target_sets = st.sets(st.one_of(domains, addresses).map(parse_target), max_size=25)


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


@given(target_sets, st.sampled_from(sorted(FORMATS)), st.sampled_from(list(Action)))
def test_round_trip(targets: set[Target], fmt: str, action: Action) -> None:
    entries = [ExportEntry(t, action, "R-1", "Court") for t in sorted(targets)]
    module = FORMATS[fmt]
    text = module.render(entries, generated_at=AT, serial=7, notice_ipv4=NOTICE4,
                         notice_ipv6=NOTICE6)
    back = module.parse(text)
    assert len(back) == len(set(back))
    if fmt == "rpz":  # one owner per name: overlapping targets of a name merge into one
        assert set(back) == rpz_coverage(targets)
    else:
        assert set(back) == targets


# -- hostile input ---------------------------------------------------------------------

SAMPLES = {
    "list": "# c\nallofmp3.com\n=exact.example # x\n*.w.example\n10.0.0.0/8\n2001:db8::1\n",
    "csv": 'target,note\nallofmp3.com,"a, b"\n"=exact.example",x\n10.0.0.1,\n',
    "rpz": ZONE,
}
SPECIALS = st.sampled_from([
    *";()\"\\.*$@ \t\n\r#,=/:0zZ-\x00\ufeff\u2028ü²",
    "rpz-ip", "rpz-nsdname", "$ORIGIN", "$INCLUDE", "CNAME", "SOA", "zz", "9" * 50, "a" * 70])


def only_format_errors(parse: Callable[[str], list[Target]], text: str) -> None:
    try:
        targets = parse(text)
    except FormatError as exc:
        assert str(exc).startswith("line ") and "\n" not in str(exc)
    else:
        assert all(isinstance(t, Target) for t in targets)


@given(st.text(max_size=400), st.sampled_from(sorted(FORMATS)))
def test_hostile_text_only_raises_format_errors(text: str, fmt: str) -> None:
    only_format_errors(FORMATS[fmt].parse, text)


@settings(max_examples=300)
@given(st.sampled_from(sorted(FORMATS)), st.data())
def test_mutated_files_only_raise_format_errors(fmt: str, data: st.DataObject) -> None:
    text = SAMPLES[fmt]
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 3))
        insert = data.draw(st.one_of(SPECIALS, st.text(max_size=3)))
        text = text[:at] + insert + text[at + cut:]
    only_format_errors(FORMATS[fmt].parse, text)


@given(st.lists(st.sampled_from(ZONE.splitlines()), max_size=20), st.text(max_size=20))
def test_shuffled_zone_lines_only_raise_format_errors(lines: list[str], junk: str) -> None:
    only_format_errors(rpz.parse, "\n".join(lines) + junk)


# -- the exported zone in BIND's and Unbound's loaders ----------------------------------

# bind9-utils and unbound are installed by scripts/test: these tests always run.


@pytest.fixture
def zone_file(tmp_path: Path) -> Path:
    path = tmp_path / "rpz.blockd.zone"
    path.write_text(render_rpz(every_kind()), encoding="utf-8")
    return path


def named_checkzone(zone: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["named-checkzone", "rpz.blockd", str(zone)],
                          capture_output=True, text=True, timeout=30, check=False)


def unbound_conf(tmp_path: Path, zone: Path, extra: str = "") -> Path:
    conf = tmp_path / "unbound.conf"
    conf.write_text(
        "server:\n"
        f'  directory: "{tmp_path}"\n  chroot: ""\n  username: ""\n'
        f'  pidfile: "{tmp_path}/unbound.pid"\n  use-syslog: no\n  logfile: ""\n'
        '  module-config: "respip validator iterator"\n'
        f"{extra}"
        f'rpz:\n  name: rpz.blockd\n  zonefile: "{zone}"\n',
        encoding="utf-8")
    return conf


def unbound_checkconf(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["unbound-checkconf", str(conf)], capture_output=True, text=True,
                          timeout=30, check=False)


def test_exported_zone_loads_in_bind(zone_file: Path) -> None:
    check = named_checkzone(zone_file)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "loaded serial 7" in check.stdout


@pytest.mark.parametrize("broken", [
    "nx.example A 192.0.2.1",  # CNAME and other data at one owner
    "broken.example A 300.1.2.3",
    "bad..example CNAME .",
])
def test_bind_rejects_a_broken_zone(zone_file: Path, broken: str) -> None:
    """The check above can fail: named-checkzone does reject bad zones."""
    zone_file.write_text(zone_file.read_text() + broken + "\n")
    assert named_checkzone(zone_file).returncode != 0


def test_exported_zone_loads_in_unbound(tmp_path: Path, zone_file: Path) -> None:
    check = unbound_checkconf(unbound_conf(tmp_path, zone_file, '  local-zone: "." static\n'))
    assert check.returncode == 0, check.stdout + check.stderr
    # unbound-checkconf exits 0 even when it logs an error about the zone's records
    assert "error:" not in check.stdout + check.stderr, check.stdout + check.stderr


def test_unbound_checkconf_reports_bad_rpz_records(tmp_path: Path, zone_file: Path) -> None:
    """Why the test above reads the output too: Unbound logs this and still exits 0."""
    zone_file.write_text(zone_file.read_text() + f"64.zz.db8.2001.rpz-ip A {NOTICE4}\n")
    check = unbound_checkconf(unbound_conf(tmp_path, zone_file, '  local-zone: "." static\n'))
    assert "does not correspond to netblock" in check.stderr


# -- a live Unbound on loopback, forwarding to an in-process stub "internet" -----------

STUB_RECORDS = [
    "nx.example. 60 IN A 198.51.100.1", "www.nx.example. 60 IN A 198.51.100.1",
    "exact.example. 60 IN A 198.51.100.2", "sub.exact.example. 60 IN A 198.51.100.3",
    "wild.example. 60 IN A 198.51.100.4", "a.wild.example. 60 IN A 198.51.100.4",
    "refused.example. 60 IN A 198.51.100.5", "notice.example. 60 IN A 198.51.100.6",
    "ip.example. 60 IN A 10.0.0.2", "pfx.example. 60 IN A 203.0.113.9",
    "v6.example. 60 IN AAAA 2001:db8::5", "ok.example. 60 IN A 198.51.100.9",
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ask(port: int, name: str, rdtype: str = "A") -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    return dns.query.udp(query, "127.0.0.1", port=port, timeout=2)


@pytest.fixture
def unbound(tmp_path: Path, zone_file: Path) -> Iterator[int]:
    """Unbound with the exported zone on 127.0.0.1:<free port>; killed after the test."""
    with StubUpstream(STUB_RECORDS) as stub:
        port = free_port()
        conf = unbound_conf(tmp_path, zone_file, (
            f"  interface: 127.0.0.1\n  port: {port}\n  do-ip6: no\n  do-daemonize: no\n"
            "  do-not-query-localhost: no\n  qname-minimisation: no\n"
            f'forward-zone:\n  name: "."\n  forward-addr: 127.0.0.1@{stub.port}\n'))
        with subprocess.Popen(["unbound", "-d", "-c", str(conf)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) as proc:
            try:
                deadline = time.monotonic() + 10
                while True:
                    try:
                        ask(port, "ok.example")
                        break
                    except (OSError, dns.exception.Timeout):
                        if proc.poll() is not None or time.monotonic() > deadline:
                            out = proc.stdout.read() if proc.stdout else b""
                            pytest.fail(f"unbound did not start: {out.decode()}")
                        time.sleep(0.1)
                yield port
            finally:
                proc.kill()
                proc.wait(10)


def test_live_unbound_enforces_the_exported_zone(unbound: int) -> None:
    def rcode(name: str, rdtype: str = "A") -> str:
        return str(dns.rcode.to_text(ask(unbound, name, rdtype).rcode()))

    def addresses(name: str, rdtype: str = "A") -> set[str]:
        reply = ask(unbound, name, rdtype)
        wanted = dns.rdatatype.from_text(rdtype)
        return {r.to_text() for rrset in reply.answer if rrset.rdtype == wanted for r in rrset}

    assert addresses("ok.example") == {"198.51.100.9"}  # the stub answers unblocked names
    assert rcode("nx.example") == rcode("www.nx.example") == "NXDOMAIN"
    assert addresses("exact.example") == {NOTICE4}
    assert addresses("exact.example", "AAAA") == {NOTICE6}
    assert addresses("sub.exact.example") == {"198.51.100.3"}  # exact: not the subtree
    assert addresses("wild.example") == {"198.51.100.4"}  # wildcard: not the name itself
    reply = ask(unbound, "a.wild.example")
    assert dns.rcode.to_text(reply.rcode()) == "NOERROR" and not reply.answer  # NODATA
    assert rcode("refused.example") == "NXDOMAIN"
    assert addresses("notice.example") == {NOTICE4}
    assert rcode("ip.example") == "NXDOMAIN"  # rpz-ip 10.0.0.2
    assert addresses("pfx.example") == {NOTICE4}  # rpz-ip 203.0.113.0/24
    assert addresses("v6.example", "AAAA") == {NOTICE6}  # rpz-ip 2001:db8::/48
    assert ipaddress.ip_address(NOTICE6) not in ipaddress.ip_network("2001:db8::/48")


@given(st.text(alphabet=st.sampled_from(["a", "b", ".", "\r", "\n", "\ufeff", "é", "#", " "]),
               max_size=200), st.booleans())
@settings(max_examples=200, deadline=None)
def test_streamed_lines_are_the_lines_of_the_whole_text(text: str, bom: bool) -> None:
    """`blockd import` reads a list line by line from the file; the lines (and so the line
    numbers in errors) are those of the whole text."""
    import tempfile
    from pathlib import Path

    from blockd.cli.common import input_lines
    from blockd.formats import lines

    text = ("\ufeff" if bom else "") + text
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "list.txt"
        path.write_bytes(text.encode("utf-8"))
        assert list(input_lines(path)) == list(lines(text))
