"""blockd/dns/cache.py: entries from upstream answers, served with TTLs dnspython reads back."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from blockd.dns import wire
from blockd.dns.cache import STALE_TTL, Cache, Entry, truncated

SOA = "ns1.example.net. hostmaster.example.net. 7 3600 600 86400 {minimum}"
T0 = 5000.0


def query(name: str = "www.example.com", rdtype: str = "A", *, edns: bool = True,
          do: bool = False, rd: bool = True) -> wire.Query:
    q = dns.message.make_query(name, rdtype, use_edns=0 if edns else False,
                               want_dnssec=do and edns)
    if not rd:
        q.flags &= ~dns.flags.RD
    scanned = wire.scan(q.to_wire())
    assert scanned is not None
    return scanned


def upstream(name: str = "www.example.com", rdtype: str = "A", rcode: int = 0, *,
             answer: tuple[tuple[str, int, str, str], ...] = (),
             authority: tuple[tuple[str, int, str, str], ...] = (),
             additional: tuple[tuple[str, int, str, str], ...] = (),
             ad: bool = False) -> bytes:
    """An upstream's answer, with an OPT as blockd always asks with EDNS."""
    r = dns.message.make_response(dns.message.make_query(name, rdtype, use_edns=0))
    r.set_rcode(rcode)
    if ad:
        r.flags |= dns.flags.AD
    for section, records in ((r.answer, answer), (r.authority, authority),
                             (r.additional, additional)):
        for owner, ttl, rtype, text in records:
            section.append(dns.rrset.from_text(owner, ttl, "IN", rtype, text))
    r.use_edns(0, 0, 1232, options=[dns.edns.GenericOption(65001, b"upstream")])
    return r.to_wire()


def entry(data: bytes, now: float = T0) -> Entry:
    return Entry.from_layout(data, wire.layout(data), now)


def parse(data: bytes) -> dns.message.Message:
    return dns.message.from_wire(data)


ANSWER = upstream(answer=(("www.example.com.", 300, "CNAME", "cdn.example.net."),
                          ("cdn.example.net.", 120, "A", "192.0.2.1")),
                  authority=(("example.net.", 3600, "NS", "ns1.example.net."),),
                  additional=(("ns1.example.net.", 10, "A", "192.0.2.53"),))


def ttls(m: dns.message.Message) -> list[int]:
    return [rrset.ttl for section in (m.answer, m.authority, m.additional) for rrset in section]


def test_render_is_the_upstream_answer_with_our_header_and_opt() -> None:
    e = entry(ANSWER)
    assert e.ttl == 120 and e.chain == ("cdn.example.net",) and (e.an, e.ns, e.ar) == (2, 1, 1)
    q = query("WWW.example.COM", do=True)
    m = parse(Cache.render(q, e, T0))
    assert m.id == q.id and m.rcode() == dns.rcode.NOERROR
    assert m.question[0].name.to_text() == "WWW.example.COM."  # the client's letter case
    assert m.answer[0].name.to_text() == "WWW.example.COM."  # compressed against it
    assert [str(r[0]) for r in m.answer] == ["cdn.example.net.", "192.0.2.1"]
    assert ttls(m) == [300, 120, 3600, 10]
    # the upstream's OPT (and its option) replaced by ours: version 0, 1232, DO echoed
    assert m.edns == 0 and m.payload == 1232 and m.options == ()
    assert m.ednsflags & dns.flags.DO


def test_render_without_edns_has_no_opt() -> None:
    m = parse(Cache.render(query(edns=False, rd=False), entry(ANSWER), T0))
    assert m.edns == -1 and len(m.additional) == 1
    assert not m.flags & dns.flags.RD and m.flags & dns.flags.RA and m.flags & dns.flags.QR


def test_ad_bit_is_kept() -> None:
    data = upstream(answer=(("www.example.com.", 60, "A", "192.0.2.1"),), ad=True)
    assert parse(Cache.render(query(do=True), entry(data), T0)).flags & dns.flags.AD
    assert not parse(Cache.render(query(), entry(ANSWER), T0)).flags & dns.flags.AD


@pytest.mark.parametrize("age", [0.0, 0.9, 1.0, 9.5, 11.0, 119.99])
def test_ttls_go_down_with_age_and_stop_at_zero(age: float) -> None:
    e = entry(ANSWER)
    m = parse(Cache.render(query(), e, T0 + age))
    whole = int(age)
    assert ttls(m) == [300 - whole, 120 - whole, 3600 - whole, max(0, 10 - whole)]


def test_render_memo_follows_the_clock_both_ways() -> None:
    e = entry(ANSWER)
    q = query()
    assert ttls(parse(Cache.render(q, e, T0 + 5)))[1] == 115
    assert ttls(parse(Cache.render(q, e, T0 + 6)))[1] == 114
    assert ttls(parse(Cache.render(q, e, T0 + 5)))[1] == 115


def test_get_within_ttl_then_expired() -> None:
    cache = Cache(stale_for=100)
    key = ("www.example.com", 1, 1, False)
    e = entry(ANSWER)
    cache.put(key, e)
    assert cache.get(key, T0 + 119.9) is e
    assert cache.get(key, T0 + 120) is None  # expired: a miss unless stale is asked for
    assert cache.get(("other", 1, 1, False), T0) is None
    assert (cache.hits, cache.misses) == (1, 2)


def test_serve_stale_window() -> None:
    cache = Cache(stale_for=100)
    key = ("www.example.com", 1, 1, False)
    e = entry(ANSWER)
    cache.put(key, e)
    assert cache.get(key, T0 + 150, stale_ok=True) is e
    assert cache.get(key, T0 + 219.9, stale_ok=True) is e
    assert cache.stale_served == 2 and len(cache) == 1
    assert cache.get(key, T0 + 220, stale_ok=True) is None  # past ttl + stale_for: gone
    assert len(cache) == 0 and cache.bytes == 0


def test_stale_render_uses_30s_and_ede_3() -> None:
    e = entry(ANSWER)
    m = parse(Cache.render(query(), e, T0 + 500, stale=True))
    assert ttls(m) == [STALE_TTL] * 4
    [ede] = m.options
    assert isinstance(ede, dns.edns.EDEOption) and ede.code == 3
    without = parse(Cache.render(query(edns=False), e, T0 + 500, stale=True))
    assert ttls(without) == [STALE_TTL] * 4 and without.edns == -1
    # serving stale does not disturb the fresh rendering memo
    assert ttls(parse(Cache.render(query(), e, T0 + 1)))[0] == 299


def test_negative_answer_cached_for_the_soa_minimum() -> None:
    data = upstream("gone.example.com", rcode=dns.rcode.NXDOMAIN, authority=(
        ("example.com.", 3600, "SOA", SOA.format(minimum=60)),))
    e = entry(data)
    assert e.ttl == 60 and e.rcode == dns.rcode.NXDOMAIN
    cache = Cache(stale_for=0)
    key = ("gone.example.com", 1, 1, False)
    cache.put(key, e)
    assert cache.get(key, T0 + 59) is e
    m = parse(Cache.render(query("gone.example.com"), e, T0 + 59))
    assert m.rcode() == dns.rcode.NXDOMAIN and not m.answer
    assert m.authority[0].rdtype == dns.rdatatype.SOA and m.authority[0].ttl == 3600 - 59
    assert cache.get(key, T0 + 60) is None


def test_nodata_without_soa_is_not_cached() -> None:
    e = entry(upstream())
    assert e.ttl == 0
    cache = Cache()
    cache.put(("www.example.com", 1, 1, False), e)
    assert len(cache) == 0 and cache.bytes == 0


def test_ttl_capped() -> None:
    cache = Cache(max_ttl=100, stale_for=0)
    key = ("www.example.com", 1, 1, False)
    e = entry(upstream(answer=(("www.example.com.", 7 * 86400, "A", "192.0.2.1"),)))
    cache.put(key, e)
    assert cache.get(key, T0 + 99) is e and cache.get(key, T0 + 100) is None


def some_entries(n: int) -> list[tuple[tuple[str, int, int, bool], Entry]]:
    out = []
    for i in range(n):
        name = f"host{i}.example.com"
        data = upstream(name, answer=((name + ".", 300, "A", f"192.0.2.{i}"),))
        out.append(((name, 1, 1, False), entry(data)))
    return out


def test_byte_bound_and_lru_eviction() -> None:
    items = some_entries(6)
    size = items[0][1].size
    assert all(e.size == size for _, e in items)
    cache = Cache(max_bytes=size * 4)
    for key, e in items[:4]:
        cache.put(key, e)
    assert len(cache) == 4 and cache.bytes == size * 4 and cache.evictions == 0
    assert cache.get(items[0][0], T0) is not None  # host0 is now the most recently used
    cache.put(*items[4])
    assert cache.get(items[1][0], T0) is None  # the least recently used went
    assert cache.get(items[0][0], T0) is not None
    cache.put(*items[5])
    assert cache.get(items[2][0], T0) is None
    assert len(cache) == 4 and cache.bytes <= cache.max_bytes and cache.evictions == 2
    survivors = [k for k, _ in items if cache.get(k, T0) is not None]
    assert survivors == [items[i][0] for i in (0, 3, 4, 5)]


def test_replacing_an_entry_keeps_the_byte_count() -> None:
    (key, e), (_, other) = some_entries(2)
    cache = Cache()
    cache.put(key, e)
    cache.put(key, other)
    assert len(cache) == 1 and cache.bytes == other.size
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0


def test_an_entry_bigger_than_the_cache_is_not_kept() -> None:
    (key, e), = some_entries(1)
    cache = Cache(max_bytes=e.size - 1)
    cache.put(key, e)
    assert len(cache) == 0 and cache.bytes == 0


@pytest.mark.parametrize("edns", [False, True])
@pytest.mark.parametrize("rcode", [wire.NOERROR, wire.SERVFAIL])
def test_truncated_has_tc_and_the_question(edns: bool, rcode: int) -> None:
    q = query("Big.Example.com", "TXT", edns=edns, do=True)
    m = parse(truncated(q, rcode))
    assert m.id == q.id and m.flags & dns.flags.TC and m.flags & dns.flags.QR
    assert m.rcode() == rcode and m.flags & dns.flags.RD
    assert m.question[0].name.to_text() == "Big.Example.com."
    assert m.question[0].rdtype == dns.rdatatype.TXT
    assert not m.answer and not m.authority and not m.additional
    assert m.edns == (0 if edns else -1)
    if edns:
        assert m.ednsflags & dns.flags.DO and m.payload == 1232


def test_upstream_opt_before_another_additional_record() -> None:
    """dnspython writes the OPT last; other servers need not. Cutting it out of the middle
    must move the TTL offsets that follow it."""
    lay = wire.layout(ANSWER)
    assert lay.opt_span is not None and lay.opt_span[1] == len(ANSWER)
    opt_start, opt_end = lay.opt_span
    glue = lay.ttl_offsets[-1] - 6  # the additional A record: a 2-byte pointer owner
    assert ANSWER[glue] & 0xC0 == 0xC0
    moved = ANSWER[:glue] + ANSWER[opt_start:opt_end] + ANSWER[glue:opt_start]
    assert dns.message.from_wire(moved).edns == 0
    e = entry(moved)
    m = parse(Cache.render(query(), e, T0 + 3))
    assert ttls(m) == [297, 117, 3597, 7]
    assert [str(r[0]) for r in m.additional] == ["192.0.2.53"] and m.options == ()


def test_negative_answers_are_kept_at_most_max_negative_ttl() -> None:
    """RFC 2308 5: a negative answer is cached (and its SOA served) for at most the cap."""
    data = upstream(rcode=dns.rcode.NXDOMAIN,
                    authority=(("example.com.", 86400, "SOA", SOA.format(minimum=86400)),))
    cache = Cache(max_negative_ttl=600)
    e = entry(data)
    cache.put(("www.example.com", 1, 1, False, False), e)
    assert e.ttl == 600
    m = parse(Cache.render(query(), e, T0))
    assert m.rcode() == dns.rcode.NXDOMAIN and m.authority[0].ttl == 600


def test_additional_records_are_dropped_before_truncating() -> None:
    glue = tuple((f"ns{i}.example.com.", 300, "A", f"192.0.2.{i}") for i in range(40))
    data = upstream(answer=(("www.example.com.", 300, "A", "192.0.2.200"),), additional=glue)
    e = entry(data)
    small = parse(Cache.render(query(edns=False), e, T0, limit=512))
    assert small.answer and not small.additional and not small.flags & dns.flags.TC
    full = parse(Cache.render(query(edns=False), e, T0))
    assert len(full.additional) == 40
