"""Names answered here, never forwarded: special-use names (RFC 6761) and the reverse
zones of private and special address ranges (RFC 6303), as Unbound's default local zones.

A subscriber's stub asking for ``localhost`` or the PTR of ``192.168.1.10`` must not leak
to the upstreams (privacy, and load on the AS112 servers). ``localhost`` and its
subdomains answer 127.0.0.1 / ::1; the loopback PTRs answer ``localhost.``; every other
name in these zones gets NXDOMAIN (NODATA at the zone apex) with the zone's SOA.
"""

from __future__ import annotations

from blockd.dns import wire

T_PTR = 12
LOCAL_TTL = 3600
SOA_MNAME, SOA_RNAME = "localhost", "nobody.invalid"

_ARPA4 = [
    "0.in-addr.arpa", "10.in-addr.arpa", "127.in-addr.arpa", "254.169.in-addr.arpa",
    *(f"{n}.172.in-addr.arpa" for n in range(16, 32)), "168.192.in-addr.arpa",
    "2.0.192.in-addr.arpa", "100.51.198.in-addr.arpa", "113.0.203.in-addr.arpa",
    "255.255.255.255.in-addr.arpa",
]
_ARPA6 = [
    "0." * 31 + "0.ip6.arpa",  # ::
    "1." + "0." * 31 + "ip6.arpa",  # ::1
    "d.f.ip6.arpa", "8.e.f.ip6.arpa", "9.e.f.ip6.arpa", "a.e.f.ip6.arpa", "b.e.f.ip6.arpa",
    "8.b.d.0.1.0.0.2.ip6.arpa",
]
ZONES = frozenset(["localhost", "invalid", "test", "onion", "home.arpa", *_ARPA4, *_ARPA6])
LOOPBACK_PTR = frozenset(["1.0.0.127.in-addr.arpa", "1." + "0." * 31 + "ip6.arpa"])


def zone_of(name: str) -> str | None:
    """The local zone ``name`` is in, or None (one dict probe per label)."""
    if not name.endswith(("localhost", "invalid", "test", "onion", "arpa")):
        return None  # the common case costs one str method
    labels = name.split(".")
    for i in range(len(labels)):
        suffix = ".".join(labels[i:])
        if suffix in ZONES:
            return suffix
    return None


def answer(q: wire.Query, zone: str) -> bytes:
    """The local answer for ``q`` in ``zone`` (authoritative)."""
    name = q.name
    records: list[bytes] = []
    rcode = wire.NOERROR
    if zone == "localhost":
        if q.qtype in (wire.T_A, wire.T_ANY):
            records.append(wire.rr(wire.POINTER_TO_QNAME, wire.T_A, LOCAL_TTL,
                                   bytes([127, 0, 0, 1])))
        if q.qtype in (wire.T_AAAA, wire.T_ANY):
            records.append(wire.rr(wire.POINTER_TO_QNAME, wire.T_AAAA, LOCAL_TTL,
                                   bytes(15) + b"\x01"))
    elif name in LOOPBACK_PTR:
        if q.qtype in (T_PTR, wire.T_ANY):
            records.append(wire.rr(wire.POINTER_TO_QNAME, T_PTR, LOCAL_TTL,
                                   wire.encode_name("localhost")))
    elif name != zone:
        rcode = wire.NXDOMAIN
    authority = b""
    if not records:
        soa = wire.soa_rdata(SOA_MNAME, SOA_RNAME, 1, LOCAL_TTL)
        authority = wire.rr(wire.encode_name(zone), wire.T_SOA, LOCAL_TTL, soa)
    ar, opt = (1, wire.opt_record(q.do)) if q.edns else (0, b"")
    flags = wire.response_flags(q.flags, rcode, aa=True)
    return (wire.header(q.id, flags, an=len(records), ns=1 if authority else 0, ar=ar)
            + q.question + b"".join(records) + authority + opt)
