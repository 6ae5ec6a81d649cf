"""DnsService.handle without sockets: blocked answers, the ACL, the rate limit, forwarding
through a stubbed upstream, and hostile input. The parts have their own files:
test_dns_wire.py, test_dns_cache.py, test_dns_answers.py, test_dns_admission.py.

Everything here is checked with dnspython, a different codec from the one blockd uses.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockd.config import DnsSettings
from blockd.core.index import compile_index
from blockd.core.model import OrderRecord
from blockd.core.names import parse_target
from blockd.dns import wire
from blockd.dns.answers import BlockedAnswers
from blockd.dns.service import DnsService
from blockd.dns.upstream import Upstreams

NOW = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = compile_index([OrderRecord(
    "FI-15124/2006", "Copenhagen City Court", date(2006, 10, 25), NOW,
    targets=frozenset({parse_target("allofmp3.com")}))], NOW)


def service() -> DnsService:
    settings = DnsSettings(upstream=(("127.0.0.1", 9),), upstream_timeout=0.05)
    answers = BlockedAnswers({}, "127.0.0.80", "::80", "https://isp.example/")
    return DnsService(lambda: POLICY, answers, settings, Upstreams(settings.upstream,
                                                                    timeout=0.05))


def run(reply: object) -> bytes | None:
    if reply is None or isinstance(reply, bytes):
        return reply
    return asyncio.run(_await(reply))


async def _await(reply: object) -> bytes | None:
    return await reply  # type: ignore[misc, no-any-return]


names = st.from_regex(r"([a-zA-Z0-9-]{1,20}\.){0,3}[a-zA-Z]{2,6}", fullmatch=True)


@given(names, st.sampled_from(["A", "AAAA", "MX", "TXT", "NS"]), st.booleans(), st.booleans())
def test_scan_agrees_with_dnspython(name: str, rdtype: str, edns: bool, do: bool) -> None:
    q = dns.message.make_query(name, rdtype, use_edns=0 if edns else False, want_dnssec=do
                               and edns)
    got = wire.scan(q.to_wire())
    assert got is not None
    assert got.name == name.lower()
    assert got.qtype == dns.rdatatype.from_text(rdtype)
    assert got.id == q.id
    assert got.edns is edns and got.do is (do and edns)


def test_blocked_answer_parses_and_names_the_order() -> None:
    q = dns.message.make_query("WWW.AllOfMP3.com", "A", use_edns=0)
    r = dns.message.from_wire(run(service().handle(q.to_wire(), "127.0.0.1")))  # type: ignore[arg-type]
    assert r.id == q.id and r.question[0].name.to_text() == "WWW.AllOfMP3.com."
    assert str(r.answer[0][0]) == "127.0.0.80"
    [opt] = [o for o in r.options if isinstance(o, dns.edns.EDEOption)]
    assert opt.code == 16 and "FI-15124/2006" in (opt.text or "")
    q6 = dns.message.make_query("allofmp3.com", "AAAA")
    r6 = dns.message.from_wire(run(service().handle(q6.to_wire(), "127.0.0.1")))  # type: ignore[arg-type]
    assert str(r6.answer[0][0]) == "::80"


def test_refused_for_clients_outside_the_acl() -> None:
    q = dns.message.make_query("allofmp3.com", "A", use_edns=0)
    r = dns.message.from_wire(run(service().handle(q.to_wire(), "198.51.100.7")))  # type: ignore[arg-type]
    assert r.rcode() == dns.rcode.REFUSED
    assert [o.code for o in r.options] == [18]


def test_pitfalls_from_the_reference() -> None:
    """Label over 63 bytes, a bad compression pointer, non-UTF-8 CAA rdata."""
    svc = service()
    long_label = bytes.fromhex("abcd01000001000000000000") + b"\x50" + b"a" * 80 + \
        b"\x00\x00\x01\x00\x01"
    bad_pointer = bytes.fromhex("abcd01000001000000000000c0ff00010001")
    caa = bytes.fromhex("abcd01000001000100000000") + b"\x01x\x00\x01\x01\x00\x01" + \
        b"\xc0\x0c\x01\x01\x00\x01\x00\x00\x00\x3c\x00\x06\x00\x03\xff\xfe\xfd\xfc"
    for packet in (long_label, bad_pointer, caa):
        reply = run(svc.handle(packet, "127.0.0.1"))
        assert reply is not None
        r = dns.message.from_wire(reply, question_only=True)
        assert r.rcode() == dns.rcode.FORMERR
    assert svc.stats.errors == 0


def valid_queries() -> st.SearchStrategy[bytes]:
    return st.builds(
        lambda n, t, e: dns.message.make_query(n, t, use_edns=e).to_wire(),
        names, st.sampled_from(["A", "AAAA", "MX", "ANY", "TXT"]),
        st.sampled_from([False, 0]))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(valid_queries()))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "cut", "insert"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[pos:]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=600), mutated()))
def test_fuzz_never_crashes_and_answers_parse(packet: bytes) -> None:
    svc = service()
    svc.cache.put = lambda *a, **k: None  # type: ignore[method-assign]
    reply = svc.handle(packet, "127.0.0.1")
    if not (reply is None or isinstance(reply, bytes)):
        reply.close()  # type: ignore[union-attr]  # would go upstream: not this test's job
        return
    assert svc.stats.errors == 0
    if reply is not None:
        assert reply[:2] == packet[:2]  # the ID is echoed
        if (packet[2] >> 3) & 0xF:  # not a QUERY: NOTIMP (dnspython would parse as UPDATE)
            assert reply[3] & 0xF in (dns.rcode.NOTIMP, dns.rcode.FORMERR)
        else:
            dns.message.from_wire(reply, question_only=True)


@pytest.mark.parametrize("payload", [512, 1232, 4096])
def test_limit_caps_at_1232(payload: int) -> None:
    q = wire.scan(dns.message.make_query("x.example", "A", use_edns=0,
                                         payload=payload).to_wire())
    assert q is not None
    assert q.limit() == min(payload, 1232)


def test_nodata_and_refused_actions_and_rate_limit() -> None:
    from blockd.core.enforcement import EnforcementPolicy
    from blockd.core.model import Action

    orders = [OrderRecord(ref, "Court", date(2024, 1, 1), NOW, policy=name,
                          targets=frozenset({parse_target(f"{name}.example")}))
              for ref, name in (("N-1", "quiet"), ("R-1", "refuse"))]
    policy = compile_index(orders, NOW, {"quiet": Action.NODATA, "refuse": Action.REFUSED})
    policies = {"quiet": EnforcementPolicy("quiet", dns_action=Action.NODATA, dns_ttl=7),
                "refuse": EnforcementPolicy("refuse", dns_action=Action.REFUSED)}
    settings = DnsSettings(upstream=(("127.0.0.1", 9),), rate_limit=1, rate_burst=3)
    svc = DnsService(lambda: policy, BlockedAnswers(policies, "127.0.0.80", None, "u"),
                     settings, Upstreams(settings.upstream))
    q = dns.message.make_query("www.quiet.example", "A", use_edns=0)
    r = dns.message.from_wire(run(svc.handle(q.to_wire(), "127.0.0.1")))  # type: ignore[arg-type]
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    assert r.authority[0].ttl == 7 and [o.code for o in r.options] == [16]
    q = dns.message.make_query("refuse.example", "A", use_edns=0)
    r = dns.message.from_wire(run(svc.handle(q.to_wire(), "127.0.0.2")))  # type: ignore[arg-type]
    assert r.rcode() == dns.rcode.REFUSED and [o.code for o in r.options] == [16]
    # the burst of 3 is spent (one query above): two more answered, then truncated empty
    # answers (TC=1, no bigger than the query) send the client to TCP
    replies = [dns.message.from_wire(run(svc.handle(q.to_wire(), "127.0.0.1")))  # type: ignore[arg-type]
               for _ in range(4)]
    assert [bool(r.flags & dns.flags.TC) for r in replies] == [False, False, True, True]
    assert not replies[3].answer and not replies[3].authority
    assert len(replies[3].to_wire()) <= len(q.to_wire())
    assert svc.stats.ratelimited == 2
    assert svc.handle(q.to_wire(), "127.0.0.1", tcp=True) is not None  # TCP is not limited


def test_upstream_answer_with_two_opt_records_is_servfail_and_not_cached() -> None:
    svc = service()
    q = dns.message.make_query("www.example.com", "A", use_edns=0)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("www.example.com.", 300, "IN", "A", "192.0.2.1"))
    good = r.to_wire()
    opt = good[-11:]
    assert opt[:3] == b"\x00\x00\x29"
    two_opts = good[:10] + b"\x00\x02" + good[12:] + opt

    async def resolve(question: bytes, do: bool, cd: bool = False) -> bytes:
        return two_opts

    svc.upstreams.resolve = resolve  # type: ignore[method-assign]
    reply = dns.message.from_wire(run(svc.handle(q.to_wire(), "127.0.0.1")))  # type: ignore[arg-type]
    assert reply.rcode() == dns.rcode.SERVFAIL and len(svc.cache) == 0

    async def resolve_good(question: bytes, do: bool, cd: bool = False) -> bytes:
        return good

    svc.upstreams.resolve = resolve_good  # type: ignore[method-assign]
    reply = dns.message.from_wire(run(svc.handle(q.to_wire(), "127.0.0.1")))  # type: ignore[arg-type]
    assert reply.rcode() == dns.rcode.NOERROR and len(svc.cache) == 1
    assert str(reply.answer[0][0]) == "192.0.2.1" and reply.edns == 0


def test_cname_chain_blocking_is_a_policy_setting() -> None:
    """`[dns] block_cname_chains = false` in a policy: its orders block only the names they
    list, not every name whose CNAME chain leads there (collateral of a shared target)."""
    from dnsstub import StubUpstream

    from blockd.core.enforcement import EnforcementPolicy

    records = ["alias.example. 300 IN CNAME cdn.clone.example.",
               "cdn.clone.example. 300 IN A 192.0.2.3",
               "alias2.example. 300 IN CNAME cdn.shared.example.",
               "cdn.shared.example. 300 IN A 192.0.2.4"]
    orders = [OrderRecord("C-1", "Court", date(2024, 1, 1), NOW, policy="chains",
                          targets=frozenset({parse_target("clone.example")})),
              OrderRecord("E-1", "Court", date(2024, 1, 1), NOW, policy="listed",
                          targets=frozenset({parse_target("shared.example")}))]
    index = compile_index(orders, NOW)
    policies = {"chains": EnforcementPolicy("chains"),
                "listed": EnforcementPolicy("listed", block_cname_chains=False)}
    with StubUpstream(records) as up:
        settings = DnsSettings(upstream=(("127.0.0.1", up.port),), upstream_timeout=1.0)

        def ask(name: str) -> dns.message.Message:
            svc = DnsService(lambda: index, BlockedAnswers(policies, "127.0.0.80", None, "u"),
                             settings, Upstreams(settings.upstream))
            q = dns.message.make_query(name, "A", use_edns=0)
            return dns.message.from_wire(run(svc.handle(q.to_wire(), "127.0.0.1")))  # type: ignore[arg-type]

        chained = ask("alias.example")
        assert [str(rr[0]) for rr in chained.answer] == ["127.0.0.80"]
        assert "C-1" in chained.options[0].text  # type: ignore[attr-defined]
        listed_only = ask("alias2.example")
        assert "192.0.2.4" in str(listed_only.answer) and not listed_only.options
        assert [str(rr[0]) for rr in ask("cdn.shared.example").answer] == ["127.0.0.80"]


def test_refusals_are_rate_limited_too() -> None:
    """A client outside the ACL gets REFUSED, but no faster than the rate limit: a spoofed
    flood cannot use blockd as a reflector."""
    policy = compile_index([], NOW, {})
    settings = DnsSettings(upstream=(("127.0.0.1", 9),), allow=("10.0.0.0/8",),
                           rate_limit=1, rate_burst=2)
    svc = DnsService(lambda: policy, BlockedAnswers({}, "127.0.0.80", None, "u"),
                     settings, Upstreams(settings.upstream))
    q = dns.message.make_query("ok.example", "A").to_wire()
    replies = [svc.handle(q, "127.0.0.1") for _ in range(4)]
    assert [r is not None for r in replies] == [True, True, False, False]
    assert dns.message.from_wire(replies[0]).rcode() == dns.rcode.REFUSED  # type: ignore[arg-type]
    assert svc.stats.refused_acl == 2 and svc.stats.dropped == 2
    assert svc.handle(q, "127.0.0.1", tcp=True) is not None  # TCP: a real client


def test_the_memo_and_the_tails_stay_within_memo_mb() -> None:
    """[dns] memo_mb bounds the replay memo (3/4) and the blocked answers' tails (1/4) in
    bytes: 12,000 blocked names of 4,000 targets, each asked once, never hold more, and
    every answer is still the policy's (names asked again are answered from the memo)."""
    targets = frozenset(parse_target(f"site{i}.example") for i in range(4_000))
    policy = compile_index([OrderRecord("BIG-1", "Court", date(2006, 10, 25), NOW,
                                        targets=targets)], NOW)
    settings = DnsSettings(upstream=(("127.0.0.1", 9),), memo_mb=1, rate_limit=1e9,
                           rate_burst=1e9)
    answers = BlockedAnswers({}, "127.0.0.80", "::80", "https://isp.example/")
    svc = DnsService(lambda: policy, answers, settings, Upstreams(settings.upstream))
    most = most_tails = 0
    for round_ in range(2):
        for i in range(12_000):
            name = f"{('www.', 'm.', '')[i % 3]}site{i // 3}.example"
            q = dns.message.make_query(name, "A", use_edns=0)
            q.id = i & 0xFFFF
            r = dns.message.from_wire(run(svc.handle(q.to_wire(), "127.0.0.1")) or b"")
            assert r.id == q.id and r.rcode() == dns.rcode.NOERROR
            assert [str(rr) for rrset in r.answer for rr in rrset] == ["127.0.0.80"], name
            assert r.question[0].name.to_text(omit_final_dot=True) == name
            most = max(most, svc.memo_bytes)
            most_tails = max(most_tails, answers.bytes)
        if round_ == 0:
            assert 0 < most <= 1024 * 1024 * 3 // 4
            assert 0 < most_tails <= 1024 * 1024 // 4
            assert len(svc._memo) < 12_000  # it started over, at least once
    assert svc.stats.blocked == 24_000
    svc.flush()
    assert svc.memo_bytes == 0
