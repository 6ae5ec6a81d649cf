"""blockd/dns/wire.py against dnspython: the query scanner, the answer walker, the helpers.

dnspython builds the messages and reads blockd's bytes back; dnslib is never the oracle.
"""

from __future__ import annotations

import random
import struct

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockd.dns import wire

# -- strategies ----------------------------------------------------------------------

# label bytes the fast path takes: printable ASCII except the dot (escaped by dnspython)
LABEL_CHARS = [c for c in range(0x21, 0x7F) if c != 0x2E] + [0x20]
labels = st.binary(min_size=1, max_size=63).map(
    lambda b: bytes(LABEL_CHARS[c % len(LABEL_CHARS)] for c in b))
letter_labels = st.from_regex(r"[a-zA-Z0-9-]{1,63}", fullmatch=True).map(str.encode)


@st.composite
def names(draw: st.DrawFn, label: st.SearchStrategy[bytes] = labels) -> dns.name.Name:
    parts: list[bytes] = []
    size = 1
    for lb in draw(st.lists(label, max_size=8)):
        if size + len(lb) + 1 > 255:
            break
        parts.append(lb)
        size += len(lb) + 1
    return dns.name.Name([*parts, b""])


@st.composite
def queries(draw: st.DrawFn) -> dns.message.Message:
    edns = draw(st.booleans())
    options = []
    if edns and draw(st.booleans()):
        options.append(dns.edns.GenericOption(65001, draw(st.binary(min_size=8, max_size=40))))
    q = dns.message.make_query(
        draw(names()), draw(st.integers(1, 65535)), draw(st.integers(1, 65535)),
        use_edns=draw(st.integers(0, 255)) if edns else False,
        want_dnssec=edns and draw(st.booleans()),
        payload=draw(st.integers(0, 65535)), options=options)
    q.id = draw(st.integers(0, 65535))
    q.flags = draw(st.sampled_from([0, dns.flags.RD, dns.flags.RD | dns.flags.CD,
                                    dns.flags.AD]))
    return q


def text_of(name: dns.name.Name) -> str:
    """The resolver's text for a name: octets as latin-1, ASCII letters folded by the
    caller, a backslash or dot inside a label escaped."""
    return ".".join(lb.decode("latin-1").replace("\\", "\\\\").replace(".", "\\.")
                    for lb in name.labels[:-1])


def ascii_lower(text: str) -> str:
    return text.encode("latin-1").lower().decode("latin-1")


# -- scan: what it accepts -----------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(queries())
def test_scan_reads_what_dnspython_wrote(q: dns.message.Message) -> None:
    data = q.to_wire()
    got = wire.scan(data)
    assert got is not None
    back = dns.message.from_wire(data)
    question = back.question[0]
    assert got.id == back.id and got.flags == back.flags
    assert got.name == ascii_lower(text_of(question.name))
    assert got.qtype == question.rdtype and got.qclass == question.rdclass
    assert got.question == data[12 : 12 + len(question.name.to_wire()) + 4]
    assert got.edns is (back.edns >= 0)
    if got.edns:
        assert got.udp_size == back.payload
        assert got.do is bool(back.ednsflags & dns.flags.DO)
        assert got.edns_version == back.edns
    else:
        assert (got.udp_size, got.do, got.edns_version) == (512, False, 0)
    assert got.rd is bool(back.flags & dns.flags.RD)


def test_scan_keeps_the_question_as_sent() -> None:
    data = dns.message.make_query("WwW.ExAmPle.COM", "A").to_wire()
    got = wire.scan(data)
    assert got is not None
    assert got.name == "www.example.com"
    assert got.question == b"\x03WwW\x07ExAmPle\x03COM\x00\x00\x01\x00\x01"


def test_scan_root_and_longest_names() -> None:
    root = wire.scan(dns.message.make_query(".", "NS").to_wire())
    assert root is not None and root.name == "" and root.question == b"\x00\x00\x02\x00\x01"
    longest = dns.name.Name([b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 61, b""])
    assert len(longest.to_wire()) == 255
    got = wire.scan(dns.message.make_query(longest, "A").to_wire())
    assert got is not None and got.name == text_of(longest)


def raw_query(qname: bytes, *, flags: int = 0x0100, counts: tuple[int, ...] = (1, 0, 0, 0),
              tail: bytes = b"\x00\x01\x00\x01", extra: bytes = b"") -> bytes:
    return struct.pack("!HHHHHH", 0x1234, flags, *counts) + qname + tail + extra


OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"


def test_raw_query_helper_is_a_query_dnspython_reads() -> None:
    data = raw_query(b"\x01a\x00", counts=(1, 0, 0, 1), extra=OPT)
    m = dns.message.from_wire(data)
    assert m.question[0].name == dns.name.from_text("a.") and m.payload == 1232
    assert wire.scan(data) is not None


def test_scan_takes_a_name_of_255_bytes_but_not_256() -> None:
    name = b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63 + b"\x3f" + b"c" * 63
    ok = name + b"\x3d" + b"d" * 61 + b"\x00"
    too_long = name + b"\x3e" + b"d" * 62 + b"\x00"
    assert len(ok) == 255 and len(too_long) == 256
    assert wire.scan(raw_query(ok)) is not None
    with pytest.raises(dns.name.NameTooLong):
        dns.message.from_wire(raw_query(too_long))
    assert wire.scan(raw_query(too_long)) is None


@pytest.mark.parametrize("case", [
    "response", "notify", "update", "no question", "two questions", "answer record",
    "authority record", "non-OPT additional", "two OPT records", "OPT not at root",
    "OPT rdlength past the end", "trailing bytes", "truncated question", "compressed qname",
])
def test_scan_declines_what_the_fast_path_must_not_answer(case: str) -> None:
    """Each of these is a message dnspython reads (so well-formed) or an obvious fault; the
    fast path leaves all of them to the slow path."""
    a = b"\x01a\x00"
    rr_a = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01"
    data = {
        "response": raw_query(a, flags=0x8180),
        "notify": raw_query(a, flags=dns.opcode.to_flags(dns.opcode.NOTIFY)),
        "update": raw_query(a, flags=dns.opcode.to_flags(dns.opcode.UPDATE)),
        "no question": raw_query(b"", counts=(0, 0, 0, 0), tail=b""),
        "two questions": raw_query(a, counts=(2, 0, 0, 0), extra=b"\x01b\x00\x00\x01\x00\x01"),
        "answer record": raw_query(a, counts=(1, 1, 0, 0), extra=rr_a),
        "authority record": raw_query(a, counts=(1, 0, 1, 0), extra=rr_a),
        "non-OPT additional": raw_query(a, counts=(1, 0, 0, 1), extra=rr_a),
        "two OPT records": raw_query(a, counts=(1, 0, 0, 2), extra=OPT + OPT),
        "OPT not at root": raw_query(a, counts=(1, 0, 0, 1), extra=b"\xc0\x0c" + OPT[1:]),
        "OPT rdlength past the end": raw_query(a, counts=(1, 0, 0, 1),
                                               extra=OPT[:-2] + b"\x00\x04"),
        "trailing bytes": raw_query(a, extra=b"\x00"),
        "truncated question": raw_query(a, tail=b"\x00\x01\x00"),
        "compressed qname": raw_query(b"\xc0\x0c"),
    }[case]
    assert wire.scan(data) is None
    if case in ("response", "notify", "no question", "two questions",
                "answer record", "authority record", "non-OPT additional"):
        dns.message.from_wire(data)  # well-formed: declined on purpose, not by accident


@pytest.mark.parametrize(("qname", "name", "decide_as"), [
    (b"\x03a.b\x07example\x00", "a\\.b.example", "\x01.example"),  # a dot in a label
    (b"\x02\xc3\xa9\x07Example\x00", "\xc3\xa9.example", None),  # octets kept, ASCII folded
    (b"\x02\xc3\xc9\x00", "\xc3\xc9", None),  # non-ASCII is not case-folded
    (b"\x03a\\b\x00", "a\\\\b", "\x01"),  # a backslash in a label
    (b"\x02\xff\xfe\x07example\x00", "\xff\xfe.example", None),
])
def test_scan_accepts_any_octet_in_a_label(qname: bytes, name: str, decide_as: str | None
                                          ) -> None:
    """RFC 2181 11: a label may hold any octet; the name stays distinct and the policy
    decides on what an order could cover."""
    q = wire.scan(raw_query(qname))
    assert q is not None and q.name == name and q.decide_as == decide_as
    assert q.policy_name == (decide_as if decide_as is not None else name)


def fast_path_oracle(data: bytes) -> dns.message.Message | None:
    """dnspython's view of whether ``data`` is a plain query the fast path should take."""
    try:
        m = dns.message.from_wire(data)
    except Exception:
        return None
    if m.flags & dns.flags.QR or m.opcode() != dns.opcode.QUERY or m.had_tsig:
        return None
    if len(m.question) != 1 or m.answer or m.authority or m.additional:
        return None
    qname = m.question[0].name
    if data[12 : 12 + len(qname.to_wire())] != qname.to_wire():
        return None  # compressed in the question
    return m  # any octet in a label is the fast path's too (RFC 2181 11)


def opt_options_malformed(data: bytes, q: wire.Query) -> bool:
    """The one known difference: the scanner does not read EDNS options (it needs none
    of them), so a query whose OPT rdata is not a valid option list still gets an answer."""
    if not q.edns:
        return False
    rdata = data[12 + len(q.question) + 11 :]
    pos = 0
    while pos + 4 <= len(rdata):
        pos += 4 + struct.unpack_from("!H", rdata, pos + 2)[0]
    return pos != len(rdata)


@st.composite
def mutated_queries(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(queries()).to_wire())
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "cut", "insert", "bump"]))
        if kind == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=6))
        else:
            data[pos] = (data[pos] + draw(st.sampled_from([1, 255]))) % 256
    return bytes(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated_queries(), st.binary(max_size=80)))
def test_scan_accepts_exactly_the_plain_queries(data: bytes) -> None:
    got = wire.scan(data)  # never raises
    expected = fast_path_oracle(data)
    if got is not None and expected is None:
        assert opt_options_malformed(data, got)
        return
    assert (got is None) == (expected is None)
    if got is not None and expected is not None:
        assert got.id == expected.id and got.flags == expected.flags
        assert got.name == ascii_lower(text_of(expected.question[0].name))
        assert got.qtype == expected.question[0].rdtype
        assert got.qclass == expected.question[0].rdclass
        assert got.edns is (expected.edns >= 0)
        assert got.udp_size == (expected.payload if got.edns else 512)


def test_scan_never_raises_on_random_cuts() -> None:
    rnd = random.Random(5)
    base = dns.message.make_query("www.example.com", "AAAA", use_edns=0,
                                  want_dnssec=True).to_wire()
    for cut in range(len(base) + 1):
        assert (wire.scan(base[:cut]) is None) == (cut != len(base))
    for _ in range(3000):
        data = bytearray(base)
        data[rnd.randrange(len(data))] = rnd.randrange(256)
        wire.scan(bytes(data))


@pytest.mark.parametrize(("edns", "payload", "limit"), [
    (False, 0, 512), (True, 0, 512), (True, 511, 512), (True, 1232, 1232),
    (True, 1400, 1232), (True, 65535, 1232),
])
def test_query_limit(edns: bool, payload: int, limit: int) -> None:
    q = wire.scan(dns.message.make_query("a.example", "A", use_edns=0 if edns else False,
                                         payload=payload).to_wire())
    assert q is not None and q.limit() == limit


# -- layout: walking upstream answers ------------------------------------------------


def response(qname: str = "www.Example.com", rdtype: str = "A", rcode: int = 0,
             answer: tuple[tuple[str, int, str, str], ...] = (),
             authority: tuple[tuple[str, int, str, str], ...] = (),
             additional: tuple[tuple[str, int, str, str], ...] = (),
             edns: bool = True) -> dns.message.Message:
    q = dns.message.make_query(qname, rdtype, use_edns=0 if edns else False)
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    for section, records in ((r.answer, answer), (r.authority, authority),
                             (r.additional, additional)):
        for owner, ttl, rtype, text in records:
            section.append(dns.rrset.from_text(owner, ttl, "IN", rtype, text))
    return r


SOA = "ns1.example.net. hostmaster.example.net. 7 3600 600 86400 {minimum}"


def ttls_in_order(m: dns.message.Message) -> list[int]:
    return [rrset.ttl for section in (m.answer, m.authority, m.additional)
            for rrset in section for _ in rrset]


def test_layout_of_a_cname_chain_with_compression() -> None:
    r = response(answer=(("www.Example.com.", 300, "CNAME", "CDN.example.net."),
                         ("cdn.example.net.", 60, "CNAME", "edge.Example.ORG."),
                         ("edge.example.org.", 120, "A", "192.0.2.1")),
                 authority=(("example.org.", 90, "NS", "ns1.example.org."),),
                 additional=(("ns1.example.org.", 5, "A", "192.0.2.53"),))
    data = r.to_wire()
    assert b"\xc0" in data[33:]  # dnspython compressed the names
    lay = wire.layout(data)
    assert lay.rcode == dns.rcode.NOERROR and lay.counts == (3, 1, 2)
    assert lay.chain == ("cdn.example.net", "edge.example.org")
    assert lay.ttl == 60  # the additional section's 5 does not count
    assert lay.question_end == 12 + len(r.question[0].name.to_wire()) + 4
    assert [struct.unpack_from("!I", data, o)[0] for o in lay.ttl_offsets] == \
        ttls_in_order(r)
    assert lay.opt_span is not None
    start, end = lay.opt_span
    assert end == len(data) and data[start] == 0 and data[start + 1 : start + 3] == b"\x00\x29"


def test_ttl_offsets_point_at_every_ttl_and_nothing_else() -> None:
    """Write a distinct TTL at every offset: dnspython must read exactly those back."""
    r = response(answer=(("www.example.com.", 300, "A", "192.0.2.1"),),
                 authority=(("example.com.", 900, "NS", "ns.example.com."),),
                 additional=(("ns.example.com.", 900, "A", "192.0.2.53"),
                             ("ns.example.com.", 900, "AAAA", "2001:db8::53")))
    data = bytearray(r.to_wire())
    lay = wire.layout(bytes(data))
    assert len(lay.ttl_offsets) == 4
    for i, offset in enumerate(lay.ttl_offsets):
        struct.pack_into("!I", data, offset, 1000 + i)
    back = dns.message.from_wire(bytes(data))
    assert ttls_in_order(back) == [1000, 1001, 1002, 1003]
    assert [str(rrset[0]).lower() for s in (back.answer, back.authority, back.additional)
            for rrset in s] == ["192.0.2.1", "ns.example.com.", "192.0.2.53", "2001:db8::53"]
    assert back.edns == 0 and back.payload == r.payload  # the OPT was not touched


@pytest.mark.parametrize(("rcode", "soa_ttl", "minimum", "expected"), [
    (dns.rcode.NXDOMAIN, 3600, 60, 60), (dns.rcode.NXDOMAIN, 30, 900, 30),
    (dns.rcode.NOERROR, 3600, 120, 120), (dns.rcode.NOERROR, 45, 45, 45),
])
def test_negative_answers_live_for_the_soa(rcode: int, soa_ttl: int, minimum: int,
                                           expected: int) -> None:
    r = response(rcode=rcode, authority=(
        ("example.com.", soa_ttl, "SOA", SOA.format(minimum=minimum)),))
    lay = wire.layout(r.to_wire())
    assert lay.rcode == rcode and lay.ttl == expected and lay.chain == ()


def test_negative_answer_behind_a_cname_keeps_the_smallest_ttl() -> None:
    r = response(rcode=dns.rcode.NXDOMAIN,
                 answer=(("www.example.com.", 20, "CNAME", "gone.example.net."),),
                 authority=(("example.net.", 3600, "SOA", SOA.format(minimum=600)),))
    lay = wire.layout(r.to_wire())
    assert lay.ttl == 20 and lay.chain == ("gone.example.net",)


@pytest.mark.parametrize("rcode", [dns.rcode.NXDOMAIN, dns.rcode.NOERROR,
                                   dns.rcode.SERVFAIL, dns.rcode.REFUSED])
def test_answers_without_soa_are_not_cached(rcode: int) -> None:
    lay = wire.layout(response(rcode=rcode).to_wire())
    assert lay.rcode == rcode and lay.ttl == 0


def test_layout_without_edns() -> None:
    r = response(answer=(("www.example.com.", 77, "A", "192.0.2.1"),), edns=False)
    lay = wire.layout(r.to_wire())
    assert lay.opt_span is None and lay.counts == (1, 0, 0) and lay.ttl == 77


def test_read_name_follows_pointers() -> None:
    data = b"\x00" * 12 + b"\x07Example\x03COM\x00" + b"\x03www\xc0\x0c" + b"\xc0\x19"
    assert wire.read_name(data, 12) == "example.com"
    assert wire.read_name(data, 25) == "www.example.com"
    assert wire.read_name(data, 31) == "www.example.com"


BASE = response(answer=(("www.example.com.", 300, "CNAME", "cdn.example.net."),
                        ("cdn.example.net.", 60, "A", "192.0.2.1")),
                authority=(("example.net.", 3600, "SOA", SOA.format(minimum=60)),)
                ).to_wire()


def with_cname_rdata(rdata: bytes) -> bytes:
    """A response whose single CNAME has ``rdata`` (rdlength set to match)."""
    head = struct.pack("!HHHHHH", 1, 0x8180, 1, 1, 0, 0) + b"\x01a\x00\x00\x01\x00\x01"
    return head + b"\xc0\x0c\x00\x05\x00\x01\x00\x00\x00\x3c" + \
        struct.pack("!H", len(rdata)) + rdata


def test_cname_rdata_helper_builds_what_dnspython_reads() -> None:
    m = dns.message.from_wire(with_cname_rdata(b"\x01b\xc0\x0c"))
    assert m.answer[0][0].target == dns.name.from_text("b.a.")
    assert wire.layout(with_cname_rdata(b"\x01b\xc0\x0c")).chain == ("b.a",)


@pytest.mark.parametrize(("case", "data"), [
    ("pointer past the end", with_cname_rdata(b"\xc0\xff")),
    ("pointer loop", with_cname_rdata(b"\xc0\x1f")),  # the rdata points at itself
    ("two pointers in a loop", with_cname_rdata(b"\x01b\xc0\x1f")),
    ("label over 63", with_cname_rdata(b"\x40" + b"x" * 64 + b"\x00")),
    ("extended label type", with_cname_rdata(b"\x80\x00")),
    ("rdata cut short", with_cname_rdata(b"\x01b\xc0\x0c")[:-1]),
    ("name runs past rdata", with_cname_rdata(b"\x05bb")),
    ("owner label over 63", BASE[:33] + b"\x50" + BASE[34:]),
    ("short message", BASE[:11]),
    ("truncated record", BASE[:40]),
    ("trailing bytes", BASE + b"\x00"),
    ("short SOA", struct.pack("!HHHHHH", 1, 0x8183, 1, 0, 1, 0) + b"\x01a\x00\x00\x01\x00\x01"
     + b"\xc0\x0c\x00\x06\x00\x01\x00\x00\x00\x3c\x00\x04\x00\x00\x00\x00"),
])
def test_malformed_answers_raise_value_error(case: str, data: bytes) -> None:
    with pytest.raises(dns.exception.DNSException):
        dns.message.from_wire(data)  # the oracle agrees the message is broken
    with pytest.raises((ValueError, struct.error)):
        wire.layout(data)


def test_a_second_opt_record_is_malformed() -> None:
    """RFC 6891 6.1.1: more than one OPT is FORMERR. Cached, the stray OPT would be served
    next to ours and the client would reject the answer."""
    assert struct.unpack_from("!H", BASE, 10)[0] == 1 and BASE[-11:-8] == OPT[:3]
    data = BASE[:10] + b"\x00\x02" + BASE[12:] + OPT
    with pytest.raises(dns.exception.DNSException):
        dns.message.from_wire(data)
    with pytest.raises(ValueError):
        wire.layout(data)


@st.composite
def mutated_responses(draw: st.DrawFn) -> bytes:
    data = bytearray(BASE)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "cut", "insert"]))
        if kind == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[pos:]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=6))
    return bytes(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated_responses(), st.binary(max_size=120)))
def test_layout_raises_only_value_errors(data: bytes) -> None:
    try:
        lay = wire.layout(data)
    except (ValueError, struct.error):
        return
    assert lay.ttl >= 0
    for offset in lay.ttl_offsets:
        assert offset >= 12 and offset + 4 <= len(data)


# -- helpers -------------------------------------------------------------------------


def parse(header: bytes, question: bytes = b"\x01a\x00\x00\x01\x00\x01",
          rest: bytes = b"") -> dns.message.Message:
    return dns.message.from_wire(header + question + rest)


@pytest.mark.parametrize("query_flags", [0, dns.flags.RD, dns.flags.RD | dns.flags.CD | 0x40,
                                         0x7FFF])
@pytest.mark.parametrize("rcode", [0, 2, 3, 5])
def test_response_flags(query_flags: int, rcode: int) -> None:
    flags = wire.response_flags(query_flags, rcode)
    m = parse(wire.header(0xBEEF, flags))
    assert m.id == 0xBEEF and m.flags & dns.flags.QR and m.flags & dns.flags.RA
    assert bool(m.flags & dns.flags.RD) == bool(query_flags & dns.flags.RD)
    assert not m.flags & (dns.flags.AA | dns.flags.TC | dns.flags.AD)
    assert bool(m.flags & dns.flags.CD) == bool(query_flags & dns.flags.CD)  # RFC 4035
    assert m.opcode() == (query_flags >> 11) & 0xF and m.rcode() == rcode  # echoed
    both = wire.response_flags(query_flags, rcode, aa=True, tc=True)
    m = parse(wire.header(1, both))
    assert m.flags & dns.flags.AA and m.flags & dns.flags.TC and m.rcode() == rcode


def test_header_counts() -> None:
    h = wire.header(7, wire.response_flags(0), an=1, ns=2, ar=3)
    assert struct.unpack("!HHHHHH", h) == (7, 0x8080, 1, 1, 2, 3)
    assert struct.unpack("!HHHHHH", wire.header(7, 0, qd=0))[2] == 0


@pytest.mark.parametrize("do", [False, True])
@pytest.mark.parametrize("ext_rcode", [0, 1])
def test_opt_record(do: bool, ext_rcode: int) -> None:
    h = wire.header(1, wire.response_flags(0, wire.BADVERS & 0xF if ext_rcode else 0), ar=1)
    m = parse(h, rest=wire.opt_record(do, ext_rcode=ext_rcode))
    assert m.edns == 0 and m.payload == 1232 and m.options == ()
    assert bool(m.ednsflags & dns.flags.DO) is do
    assert m.rcode() == (dns.rcode.BADVERS if ext_rcode else dns.rcode.NOERROR)


@pytest.mark.parametrize(("code", "text"), [
    (16, "blocked under order FI-15124/2006 of Copenhagen City Court"),
    (18, "client not authorised"), (3, ""), (15, "Københavns Byret: ordre nr. 1 — ✓"),
])
def test_ede_option(code: int, text: str) -> None:
    opt = wire.opt_record(True, wire.ede_option(code, text))
    m = parse(wire.header(1, wire.response_flags(0), ar=1), rest=opt)
    [ede] = m.options
    assert isinstance(ede, dns.edns.EDEOption)
    assert ede.code == code and (ede.text or "") == text


def test_several_options_in_one_opt() -> None:
    options = wire.ede_option(16, "a") + wire.ede_option(3)
    m = parse(wire.header(1, wire.response_flags(0), ar=1),
              rest=wire.opt_record(False, options))
    assert [(o.code, o.text) for o in m.options] == [(16, "a"), (3, None)]


def test_rr_soa_and_encode_name() -> None:
    soa = wire.soa_rdata("blockd.invalid", "hostmaster.blockd.invalid", 2**32 + 5, 42)
    answer = wire.rr(wire.POINTER_TO_QNAME, wire.T_SOA, 42, soa)
    m = parse(wire.header(1, wire.response_flags(0), ns=1), rest=answer)
    rrset = m.authority[0]
    assert rrset.name == dns.name.from_text("a.") and rrset.ttl == 42
    assert rrset.rdtype == dns.rdatatype.SOA and rrset.rdclass == dns.rdataclass.IN
    record = rrset[0]
    assert record.mname == dns.name.from_text("blockd.invalid.")
    assert record.rname == dns.name.from_text("hostmaster.blockd.invalid.")
    assert (record.serial, record.minimum) == (5, 42)
    assert wire.encode_name("") == b"\x00"
    assert wire.encode_name("www.example.com") == dns.name.from_text("www.example.com").to_wire()
