"""blockd/dns/answers.py: the blocked answer for each action, as dnspython reads it."""

from __future__ import annotations

from datetime import UTC, date, datetime

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from blockd.core.enforcement import EnforcementPolicy
from blockd.core.index import BlockIndex, Match, compile_index
from blockd.core.model import Action, OrderRecord
from blockd.core.names import parse_target
from blockd.dns import wire
from blockd.dns.answers import MAX_EDE_TEXT, BlockedAnswers

NOW = datetime(2026, 1, 1, tzinfo=UTC)
URL = "https://isp.example/blocking"
POLICIES = {
    "notice": EnforcementPolicy("notice", dns_action=Action.NOTICE, dns_ttl=11,
                                ede_text="order {reference} ({jurisdiction}) by {authority}"),
    "gone": EnforcementPolicy("gone", dns_action=Action.NXDOMAIN, dns_ttl=12),
    "quiet": EnforcementPolicy("quiet", dns_action=Action.NODATA, dns_ttl=13),
    "refuse": EnforcementPolicy("refuse", dns_action=Action.REFUSED, dns_ttl=14),
}
ORDERS = [
    OrderRecord(f"REF-{name}/2025", f"Court of {name}", date(2025, 1, 1), NOW, policy=name,
                jurisdiction="DK", targets=frozenset({parse_target(f"{name}.example")}))
    for name in POLICIES
]
INDEX = compile_index(ORDERS, NOW, {n: p.dns_action for n, p in POLICIES.items()})


def answers(v6: str | None = "2001:db8::80", serial: int = 9) -> BlockedAnswers:
    return BlockedAnswers(dict(POLICIES), "192.0.2.80", v6, URL, serial)


def query(name: str, rdtype: str = "A", *, edns: bool = True, do: bool = False,
          ident: int = 4242, rd: bool = True) -> wire.Query:
    q = dns.message.make_query(name, rdtype, use_edns=0 if edns else False,
                               want_dnssec=do and edns)
    q.id = ident
    if not rd:
        q.flags &= ~dns.flags.RD
    scanned = wire.scan(q.to_wire())
    assert scanned is not None
    return scanned


def match(q: wire.Query, index: BlockIndex = INDEX) -> Match:
    decision = index.decide_name(q.name)
    assert decision.matches
    return decision.matches[0]


def answer(blocked: BlockedAnswers, q: wire.Query) -> dns.message.Message:
    return dns.message.from_wire(blocked.tail(q, match(q)).render(q))


def ede(m: dns.message.Message) -> tuple[int, str]:
    [option] = m.options
    assert isinstance(option, dns.edns.EDEOption)
    return option.code, option.text or ""


def soa_check(m: dns.message.Message, ttl: int, serial: int = 9) -> None:
    [rrset] = m.authority
    assert rrset.rdtype == dns.rdatatype.SOA and rrset.ttl == ttl
    # RFC 2308: owned by a zone that contains the query name and that the answer does
    # not deny: the blocked target's parent (every target here is NAME.example)
    qname = m.question[0].name
    assert qname.is_subdomain(rrset.name) and rrset.name != qname
    assert rrset.name == dns.name.from_text("example.")
    assert rrset[0].minimum == ttl and rrset[0].serial == serial


def test_notice_a() -> None:
    q = query("www.Notice.example")
    m = answer(answers(), q)
    assert m.id == 4242 and m.rcode() == dns.rcode.NOERROR
    assert m.flags & dns.flags.QR and m.flags & dns.flags.AA and m.flags & dns.flags.RD
    [rrset] = m.answer
    assert rrset.rdtype == dns.rdatatype.A and [str(r) for r in rrset] == ["192.0.2.80"]
    assert rrset.ttl == 11 and rrset.name.to_text() == "www.Notice.example."
    assert not m.authority
    assert ede(m) == (16, "order REF-notice/2025 (DK) by Court of notice")


def test_notice_aaaa_with_and_without_an_ipv6_notice_address() -> None:
    q = query("notice.example", "AAAA")
    m = answer(answers(), q)
    assert [str(r) for r in m.answer[0]] == ["2001:db8::80"] and m.answer[0].ttl == 11
    m = answer(answers(v6=None), q)
    assert m.rcode() == dns.rcode.NOERROR and not m.answer  # NODATA, not NXDOMAIN
    soa_check(m, 11)
    assert ede(m)[0] == 16


@pytest.mark.parametrize("rdtype", ["MX", "TXT", "HTTPS"])
def test_notice_for_other_types_is_nodata(rdtype: str) -> None:
    m = answer(answers(), query("notice.example", rdtype))
    assert m.rcode() == dns.rcode.NOERROR and not m.answer
    soa_check(m, 11)


def test_notice_any_gets_the_a_record_only() -> None:
    m = answer(answers(), query("notice.example", "ANY"))
    assert [rrset.rdtype for rrset in m.answer] == [dns.rdatatype.A]


@pytest.mark.parametrize("rdtype", ["A", "AAAA", "MX"])
def test_nxdomain(rdtype: str) -> None:
    m = answer(answers(), query("deep.www.gone.example", rdtype))
    assert m.rcode() == dns.rcode.NXDOMAIN and not m.answer
    assert m.flags & dns.flags.AA
    soa_check(m, 12)
    code, text = ede(m)
    assert code == 16 and "REF-gone/2025" in text and "Court of gone" in text and URL in text


@pytest.mark.parametrize("rdtype", ["A", "AAAA"])
def test_nodata(rdtype: str) -> None:
    m = answer(answers(), query("quiet.example", rdtype))
    assert m.rcode() == dns.rcode.NOERROR and not m.answer
    soa_check(m, 13)
    assert "REF-quiet/2025" in ede(m)[1]


def test_refused() -> None:
    m = answer(answers(), query("refuse.example"))
    assert m.rcode() == dns.rcode.REFUSED
    assert not m.answer and not m.authority
    assert not m.flags & dns.flags.AA  # a refusal is not an authoritative answer
    assert ede(m)[0] == 16 and "REF-refuse/2025" in ede(m)[1]


@pytest.mark.parametrize("name", ["notice.example", "gone.example", "quiet.example",
                                  "refuse.example"])
def test_without_edns_there_is_no_opt(name: str) -> None:
    q = query(name, edns=False, rd=False)
    data = answers().tail(q, match(q)).render(q)
    m = dns.message.from_wire(data)
    assert m.edns == -1 and not m.additional and m.options == ()
    assert data[10:12] == b"\x00\x00"  # ARCOUNT 0
    assert not m.flags & dns.flags.RD and m.flags & dns.flags.RA


@pytest.mark.parametrize("do", [False, True])
def test_opt_echoes_do(do: bool) -> None:
    m = answer(answers(), query("gone.example", do=do))
    assert m.edns == 0 and m.payload == 1232
    assert bool(m.ednsflags & dns.flags.DO) is do


def test_letter_case_and_id_are_per_query_the_tail_is_shared() -> None:
    blocked = answers()
    first = query("WWW.NoTiCe.EXAMPLE", ident=1)
    second = query("www.notice.example", ident=2)
    assert blocked.tail(first, match(first)) is blocked.tail(second, match(second))
    for q in (first, second):
        data = blocked.tail(q, match(q)).render(q)
        m = dns.message.from_wire(data)
        assert m.id == q.id
        assert data[12 : 12 + len(q.question)] == q.question
        assert m.question[0].name.to_text() == m.answer[0].name.to_text()
    assert dns.message.from_wire(blocked.tail(first, match(first)).render(first)) \
        .question[0].name.to_text() == "WWW.NoTiCe.EXAMPLE."


def test_tails_differ_by_type_edns_and_do() -> None:
    blocked = answers()
    tails = {id(blocked.tail(q, match(q))) for q in (
        query("notice.example"), query("notice.example", "AAAA"),
        query("notice.example", edns=False), query("notice.example", do=True))}
    assert len(tails) == 4


def test_clear_drops_prebuilt_tails() -> None:
    blocked = answers(serial=9)
    q = query("quiet.example")
    before = blocked.tail(q, match(q))
    soa_check(answer(blocked, q), 13, serial=9)
    blocked.policies = {**POLICIES, "quiet": EnforcementPolicy(
        "quiet", dns_action=Action.NODATA, dns_ttl=99, ede_text="lifted soon: {reference}")}
    assert blocked.tail(q, match(q)) is before  # same snapshot: the prebuilt tail
    blocked.clear(10)
    m = answer(blocked, q)
    assert blocked.tail(q, match(q)) is not before
    soa_check(m, 99, serial=10)
    assert ede(m) == (16, "lifted soon: REF-quiet/2025")


def test_order_with_an_unknown_policy_uses_default_then_a_fallback_text() -> None:
    order = OrderRecord("X-1", "Court", date(2025, 1, 1), NOW, policy="missing",
                        targets=frozenset({parse_target("x.example")}))
    index = compile_index([order], NOW)
    q = query("x.example")
    bare = BlockedAnswers({}, "192.0.2.80", None, URL)
    m = dns.message.from_wire(bare.tail(q, match(q, index)).render(q))
    assert m.answer[0].ttl == 30 and ede(m) == (16, "blocked under order X-1 of Court")
    default = BlockedAnswers({"default": EnforcementPolicy("default", dns_ttl=5)},
                             "192.0.2.80", None, URL)
    m = dns.message.from_wire(default.tail(q, match(q, index)).render(q))
    assert m.answer[0].ttl == 5 and ede(m) == (16, f"blocked under order X-1 of Court; see {URL}")


def test_long_ede_text_is_cut_on_a_character_boundary() -> None:
    policy = EnforcementPolicy("notice", dns_ttl=11, ede_text="ø" * 400 + " {reference}")
    blocked = BlockedAnswers({"notice": policy}, "192.0.2.80", None, URL)
    q = query("notice.example")
    data = blocked.tail(q, match(q)).render(q)
    code, text = ede(dns.message.from_wire(data))
    assert code == 16 and text == "ø" * (MAX_EDE_TEXT // 2)
    assert len(data) < 512


def test_long_names_compress_against_the_question() -> None:
    """The notice record's owner is a pointer to the question: a deep, long name."""
    name = ".".join(["a" * 60] * 3) + ".notice.example"
    q = query(name, "A")
    m = answer(answers(), q)
    assert m.answer[0].name == dns.name.from_text(name)


def test_every_target_of_an_order_shares_its_notice_tail() -> None:
    """A notice answer points at the question's name and carries the order's EDE: the
    names of different targets of one order share one tail, each answer still names its
    own question; another order gets its own (its EDE text differs)."""
    both = OrderRecord("TWO-1", "Court", date(2025, 1, 1), NOW, targets=frozenset(
        {parse_target("one.example"), parse_target("=two.example")}))
    other = OrderRecord("OTHER-2", "Court", date(2025, 1, 1), NOW,
                        targets=frozenset({parse_target("three.example")}))
    index = compile_index([both, other], NOW)
    blocked = answers()
    queries = [query(n) for n in ("www.one.example", "one.example", "two.example",
                                  "three.example")]
    tails = [blocked.tail(q, match(q, index)) for q in queries]
    assert tails[0] is tails[1] is tails[2] and tails[3] is not tails[0]
    for q, tail in zip(queries, tails, strict=True):
        m = dns.message.from_wire(tail.render(q))
        assert m.answer[0].name == m.question[0].name == dns.name.from_text(q.name)
        assert [rr.to_text() for rr in m.answer[0]] == ["192.0.2.80"]
        assert ede(m)[1].find("TWO-1" if q is not queries[3] else "OTHER-2") >= 0, ede(m)
