"""DNS wire format: the fast path that never builds a full message object.

The common queries (one question, optionally one OPT record) are scanned straight from
the bytes, and answers are assembled from prebuilt byte strings: a header, the client's
own question bytes (so 0x20 letter case is echoed exactly) and a cached tail. Anything
unusual returns None from :func:`scan` and goes to the dnslib slow path.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = struct.Struct("!HHHHHH")
RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
QTAIL = struct.Struct("!HH")

QR, AA, TC, RD, RA, AD, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0020, 0x0010
OPCODE = 0x7800
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16

T_A, T_NS, T_CNAME, T_SOA, T_HINFO, T_AAAA, T_OPT, T_ANY = 1, 2, 5, 6, 13, 28, 41, 255
C_IN = 1

EDNS_SIZE = 1232  # DNS Flag Day 2020: never advertise or send more over UDP
EDE_OPTION = 15
EDE_CENSORED = 16
EDE_PROHIBITED = 18
EDE_STALE = 3
DO_BIT = 0x8000


@dataclass(slots=True)
class Query:
    """What the fast path needs to know about a query. Treated as immutable, but not a
    frozen dataclass: a frozen one's ``__init__`` (a setattr per field) cost 1.5 us of
    every query."""

    id: int
    flags: int
    question: bytes  # the question section exactly as sent (name, type, class)
    name: str  # lower case, no trailing dot; "" for the root
    qtype: int
    qclass: int
    edns: bool
    udp_size: int  # the client's limit for UDP answers (512 without EDNS)
    do: bool
    edns_version: int
    # the name the policy decides on when ``name`` had to escape a label holding a dot or
    # a backslash: the labels right of the last such label under an opaque first label
    # (so subtree orders still cover it and exact ones do not); None: ``name`` itself
    decide_as: str | None = None

    @property
    def policy_name(self) -> str:
        return self.name if self.decide_as is None else self.decide_as

    @property
    def rd(self) -> bool:
        return bool(self.flags & RD)

    @property
    def cd(self) -> bool:
        return bool(self.flags & CD)

    @property
    def wants_ad(self) -> bool:
        """May the answer carry AD? Only if the client set AD or DO (RFC 6840 5.8)."""
        return self.do or bool(self.flags & AD)

    def limit(self) -> int:
        return min(max(self.udp_size, 512), EDNS_SIZE) if self.edns else 512


def scan(data: bytes) -> Query | None:
    """Parse a plain query (QUERY opcode, one question, at most an OPT); else None.

    None for compressed or over-long names. A label may hold any octet (RFC 2181 11):
    see :func:`names_of`. The OPT's options are not read (nothing here needs them), so a
    query with a malformed option list still gets an answer instead of FORMERR.
    """
    if len(data) < 17:
        return None
    ident, flags, qd, an, ns, ar = HEADER.unpack_from(data)
    if flags & 0xF800 or qd != 1 or an or ns or ar > 1:  # QR set, or opcode not QUERY
        return None
    pos = 12
    labels: list[bytes] = []
    total = 0
    end = len(data)
    while True:
        if pos >= end:
            return None
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length > 63:
            return None  # compression or a bad label: the slow path decides
        total += length + 1
        if total > 254 or pos + 1 + length > end:
            return None
        labels.append(data[pos + 1 : pos + 1 + length])
        pos += 1 + length
    if pos + 4 > end:
        return None
    qtype, qclass = QTAIL.unpack_from(data, pos)
    pos += 4
    question = data[12:pos]
    name, decide_as = names_of(labels)
    edns, udp_size, do, version = False, 512, False, 0
    if ar:
        if pos + 11 > end or data[pos] != 0:
            return None
        rtype, rclass, ttl, rdlen = RR_FIXED.unpack_from(data, pos + 1)
        if rtype != T_OPT or pos + 11 + rdlen != end:
            return None
        edns, udp_size = True, rclass
        version = (ttl >> 16) & 0xFF
        do = bool(ttl & DO_BIT)
        pos = end
    if pos != end:
        return None
    return Query(ident, flags, question, name, qtype, qclass, edns, udp_size, do, version,
                 decide_as)


def names_of(labels: list[bytes]) -> tuple[str, str | None]:
    """(name, decide_as) for a query's labels. Plain names: lower-case ASCII, None. A label
    may hold any octet (RFC 2181 11): non-ASCII octets are kept as latin-1 (only ASCII
    letters are folded); a dot or backslash inside a label is escaped as in zone files so
    distinct names stay distinct, and the policy then decides on what is right of it."""
    joined = b".".join(labels)
    if not labels:
        return "", None
    if b"\\" not in joined and joined.count(b".") == len(labels) - 1:  # the common case
        return joined.lower().decode("latin-1"), None
    special = [i for i, lb in enumerate(labels) if b"." in lb or b"\\" in lb]
    escaped = ".".join(lb.lower().decode("latin-1").replace("\\", "\\\\").replace(".", "\\.")
                       for lb in labels)
    rest = labels[special[-1] + 1:]
    return escaped, "\x01." + ".".join(lb.lower().decode("latin-1") for lb in rest) \
        if rest else "\x01"


def header(ident: int, flags: int, an: int = 0, ns: int = 0, ar: int = 0, qd: int = 1) -> bytes:
    return HEADER.pack(ident, flags, qd, an, ns, ar)


def response_flags(query_flags: int, rcode: int = NOERROR, *, aa: bool = False,
                   tc: bool = False) -> int:
    """QR set; opcode, RD and CD copied from the query (RFC 1035 4.1.1, RFC 4035 3.2.2);
    RA set (we are a recursive service). AD is the caller's to set (RFC 6840 5.8)."""
    return (QR | (query_flags & (OPCODE | RD | CD)) | RA | (AA if aa else 0)
            | (TC if tc else 0) | (rcode & 0xF))


def encode_name(name: str) -> bytes:
    if not name:
        return b"\x00"
    return b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.split(".")) + b"\x00"


def rr(owner: bytes, rtype: int, ttl: int, rdata: bytes, rclass: int = C_IN) -> bytes:
    return owner + RR_FIXED.pack(rtype, rclass, ttl, len(rdata)) + rdata


POINTER_TO_QNAME = b"\xc0\x0c"


def opt_record(do: bool, options: bytes = b"", ext_rcode: int = 0) -> bytes:
    """Our OPT: 1232-byte buffer, version 0, the query's DO bit copied (RFC 3225)."""
    ttl = (ext_rcode << 24) | (DO_BIT if do else 0)
    return b"\x00" + RR_FIXED.pack(T_OPT, EDNS_SIZE, ttl, len(options)) + options


def ede_option(code: int, text: str = "") -> bytes:
    payload = struct.pack("!H", code) + text.encode("utf-8")
    return struct.pack("!HH", EDE_OPTION, len(payload)) + payload


def soa_rdata(mname: str, rname: str, serial: int, minimum: int) -> bytes:
    return (encode_name(mname) + encode_name(rname)
            + struct.pack("!IIIII", serial & 0xFFFFFFFF, 3600, 600, 86400, minimum))


def skip_name(data: bytes, pos: int) -> int:
    """Offset just past a (possibly compressed) name; raises ValueError if malformed."""
    end = len(data)
    while True:
        if pos >= end:
            raise ValueError("name runs past the end")
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            if pos + 2 > end:
                raise ValueError("truncated pointer")
            return pos + 2
        if length > 63:
            raise ValueError("bad label type")
        pos += 1 + length


@dataclass(frozen=True, slots=True)
class Layout:
    """Where things are in a response, and what the cache needs to know about it.

    Built by one walk over the records: the cache patches TTLs at ``ttl_offsets`` and cuts
    out the OPT record; the resolver reads ``rcode``, ``ttl`` and the CNAME ``chain``.
    """

    question_end: int
    ttl_offsets: tuple[int, ...]  # answer + authority + non-OPT additional records
    opt_span: tuple[int, int] | None  # start, end of the OPT record
    counts: tuple[int, int, int]  # an, ns, ar (ar includes OPT)
    rcode: int
    ttl: int  # how long the answer may be cached (RFC 2308 for negative answers)
    chain: tuple[str, ...]  # CNAME targets in the answer section
    additional_start: int = 0  # where the additional section begins


def layout(data: bytes) -> Layout:
    """Walk a response once; raises ValueError (or struct.error) on anything malformed,
    more than one OPT record included.

    The cache TTL is the smallest TTL of the answer and authority records; a negative
    answer (NXDOMAIN, or NOERROR without answers) lives for its SOA's TTL bounded by the
    SOA minimum, or 0 (not cached) without an SOA.
    """
    if len(data) < 12:
        raise ValueError("short message")
    _, flags, qd, an, ns, ar = HEADER.unpack_from(data)
    pos = 12
    for _ in range(qd):
        pos = skip_name(data, pos) + 4
    question_end = pos
    ttl_offsets: list[int] = []
    ttls: list[int] = []
    chain: list[str] = []
    soa: tuple[int, int] | None = None
    opt: tuple[int, int] | None = None
    additional_start = 0
    for i in range(an + ns + ar):
        start = pos
        if i == an + ns:
            additional_start = pos
        pos = skip_name(data, pos)
        if pos + 10 > len(data):
            raise ValueError("truncated record")
        rtype, _, ttl, rdlen = RR_FIXED.unpack_from(data, pos)
        rdata = pos + 10
        pos = rdata + rdlen
        if pos > len(data):
            raise ValueError("record runs past the end")
        if rtype == T_OPT and i >= an + ns:
            if opt is not None:  # RFC 6891 6.1.1; cached, it would sit beside our own OPT
                raise ValueError("more than one OPT record")
            opt = (start, pos)
            continue
        ttl_offsets.append(rdata - 6)
        if i >= an + ns:
            continue
        ttls.append(ttl if ttl < 0x80000000 else 0)  # top bit set: 0 (RFC 2181 8)
        if i < an and rtype == T_CNAME:
            chain.append(read_name(data, rdata))
        elif i >= an and rtype == T_SOA and soa is None:
            if rdlen < 22:
                raise ValueError("short SOA")
            soa = (ttl if ttl < 0x80000000 else 0,
                   struct.unpack_from("!I", data, pos - 4)[0] & 0x7FFFFFFF)
    if pos != len(data):
        raise ValueError("trailing bytes")
    rcode = flags & 0xF
    if an and rcode == NOERROR:
        cache_ttl = min(ttls)
    else:
        cache_ttl = min(soa) if soa else 0
        if ttls:
            cache_ttl = min(cache_ttl, *ttls)
    return Layout(question_end, tuple(ttl_offsets), opt, (an, ns, ar), rcode,
                  max(0, cache_ttl), tuple(chain), additional_start or pos)


def first_rrset(data: bytes) -> bytes:
    """An ANY answer cut to its first RRset (RFC 8482 4.1, as Unbound answers ANY): the
    leading answer records of the first record's type, without authority or additional
    records. Negative answers, CNAMEs and anything malformed are returned as they are.
    Cutting a message's tail never breaks a compression pointer (they point backwards)."""
    try:
        _, flags, qd, an, _, _ = HEADER.unpack_from(data)
        if flags & 0xF != NOERROR or qd != 1 or an == 0:
            return data
        pos = skip_name(data, 12) + 4
        first_type = None
        kept = 0
        for _ in range(an):
            end = skip_name(data, pos)
            rtype, _, _, rdlen = RR_FIXED.unpack_from(data, end)
            if first_type is None:
                if rtype == T_CNAME:
                    return data
                first_type = rtype
            elif rtype != first_type:
                break
            pos = end + 10 + rdlen
            kept += 1
        if pos > len(data):
            return data
        return HEADER.pack(*HEADER.unpack_from(data)[:3], kept, 0, 0) + data[12:pos]
    except (ValueError, struct.error):
        return data


def read_name(data: bytes, pos: int) -> str:
    """The lower-case dotted name at ``pos``, following compression pointers."""
    labels: list[str] = []
    jumps = 0
    total = 0
    while True:
        if pos >= len(data):
            raise ValueError("name runs past the end")
        length = data[pos]
        if length == 0:
            return ".".join(labels)
        if length & 0xC0 == 0xC0:
            if pos + 1 >= len(data):
                raise ValueError("truncated pointer")
            jumps += 1
            if jumps > 32:
                raise ValueError("compression loop")
            pos = ((length & 0x3F) << 8) | data[pos + 1]
            continue
        if length > 63:
            raise ValueError("bad label type")
        total += length + 1
        if total > 255:
            raise ValueError("name too long")
        labels.append(data[pos + 1 : pos + 1 + length].decode("latin-1").lower()
                      .replace(".", "\\."))
        pos += 1 + length
