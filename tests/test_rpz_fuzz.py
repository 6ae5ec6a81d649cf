"""The RPZ primary's query parser on hostile bytes: random packets and mutations of real
queries (labels over 63 bytes, compression loops, bad TSIG, truncation) never raise, and
whatever comes back is a DNS message dnspython can read."""

from __future__ import annotations

import base64
import struct
from datetime import UTC, date, datetime

import dns.message
import dns.rrset
import dns.tsig
import dns.tsigkeyring
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockd.core.index import compile_index
from blockd.core.model import OrderRecord
from blockd.core.names import parse_target
from blockd.rpz.primary import Primary, TsigKey, Zone
from blockd.rpz.zone import ZoneSettings

APEX = "rpz.isp.example"
SECRET = base64.b64encode(bytes(range(32))).decode()
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def primary(signed: bool) -> Primary:
    order = OrderRecord("R-1", "Court", date(2024, 1, 1), NOW, targets=frozenset(
        parse_target(t) for t in ("allofmp3.com", "=exact.example", "45.33.32.0/24")))
    zone = Zone(ZoneSettings(apex=APEX, notice_ipv4="127.0.0.80"),
                compile_index([order], NOW), "ab" * 32, 7)
    return Primary(zone, key=TsigKey("k.", SECRET) if signed else None)


PLAIN, SIGNED = primary(False), primary(True)
RING = dns.tsigkeyring.from_text({"k.": ("hmac-sha256", SECRET)})


def seeds() -> list[bytes]:
    out = []
    for name, rdtype in [(APEX, "SOA"), (APEX, "AXFR"), (APEX, "IXFR"), (APEX, "TXT"),
                         ("allofmp3.com." + APEX, "A"), ("x." + APEX, "ANY")]:
        q = dns.message.make_query(name, rdtype, use_edns=0)
        if rdtype == "IXFR":
            q.authority = [dns.rrset.from_text(APEX + ".", 0, "IN", "SOA",
                                               "localhost. h. 6 1 1 1 1")]
        out.append(q.to_wire())
        q.use_tsig(RING, "k.", algorithm=dns.tsig.HMAC_SHA256)
        out.append(q.to_wire())
    header = struct.pack("!6H", 1, 0x0100, 1, 0, 0, 0)
    out.append(header + b"\x50" + b"a" * 80 + b"\x00\x00\x01\x00\x01")  # label over 63
    out.append(header + b"\xc0\x0c\x00\x01\x00\x01")  # a pointer to itself
    out.append(header + b"\x03rpz\xc0\x0c\x00\xfc\x00\x01")  # a loop through the name
    out.append(struct.pack("!6H", 1, 0x0100, 1, 0, 0, 1) + b"\x00\x00\x06\x00\x01"
               + b"\x00\x00\x10\x00\x01\x00\x00\x00\x00\x00\x03\xff\xfe\xfd")  # bad utf-8
    return out


SEEDS = seeds()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


def check(p: Primary, data: bytes, tcp: bool) -> None:
    reply = p.answer(data, "127.0.0.1", tcp)
    for n, message in enumerate(reply.messages):
        assert len(message) < 65_536
        dns.message.from_wire(message, keyring=lambda _m, _n: False)  # TSIG read, unchecked
        if n > 3:
            break


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(mutated(), st.binary(max_size=300)), tcp=st.booleans(),
       signed=st.booleans())
def test_hostile_queries_never_raise(data: bytes, tcp: bool, signed: bool) -> None:
    check(SIGNED if signed else PLAIN, data, tcp)


def test_the_seeds_are_answered() -> None:
    """The unmutated queries get real answers (so the fuzzing starts from valid ones)."""
    for data in SEEDS[:12]:
        assert list(PLAIN.answer(data, "127.0.0.1", True).messages)


POOL = ["a.example", "=a.example", "*.a.example", "b.example", "=c.example",
        "45.33.32.0/24", "45.33.32.7", "2a01:4f8::/48", "d.example"]
HOURS = [None, 1, 2, 3]


@st.composite
def histories(draw: st.DrawFn) -> list[OrderRecord]:
    from datetime import timedelta

    orders = []
    for i in range(draw(st.integers(1, 4))):
        start, end = draw(st.sampled_from(HOURS)), draw(st.sampled_from(HOURS))
        orders.append(OrderRecord(
            f"R-{i}", "Court", date(2024, 1, 1), NOW,
            policy=draw(st.sampled_from(["default", "it", "nodata"])),
            effective_from=NOW + timedelta(hours=start) if start else None,
            effective_until=NOW + timedelta(hours=end) if end else None,
            targets=frozenset(parse_target(t) for t in draw(
                st.lists(st.sampled_from(POOL), min_size=1, max_size=4)))))
    return orders


@settings(max_examples=200, deadline=None)
@given(orders=histories(), hours=st.integers(0, 4))
def test_differences_turn_one_version_into_the_next(orders: list[OrderRecord],
                                                    hours: int) -> None:
    """The old zone minus the removed records plus the added ones is the new zone, for
    the clock moving orders in and out of force over overlapping targets."""
    from datetime import timedelta

    from blockd.core.index import IndexBuilder
    from blockd.core.model import Action

    actions = {"default": Action.NOTICE, "it": Action.NXDOMAIN, "nodata": Action.NODATA}
    builder = IndexBuilder(NOW, actions)
    for o in orders:
        builder.load(o)
    old = builder.index()
    builder.advance(NOW + timedelta(hours=hours, minutes=30))
    new = builder.index()
    settings_ = ZoneSettings(apex=APEX, notice_ipv4="127.0.0.80", notice_ipv6="2001:db8::80")
    zone = Zone(settings_, old, None, 1)
    change = zone.prepare(new, None)
    before = {r for r in zone.records() if r[1] != "SOA"}
    delta = zone.install(change, 2) if change is not None else None
    after = {r for r in zone.records() if r[1] != "SOA"}
    if delta is None:
        assert before == after
        return
    assert (before - set(delta.removed)) | set(delta.added) == after
    assert not set(delta.removed) & set(delta.added)


def test_serials_only_grow() -> None:
    from blockd.rpz.primary import serial_after, serial_gt

    assert serial_after(100, 5000) == 5000  # the clock, when it is ahead
    assert serial_after(5000, 5000) == 5001  # two versions in one second
    assert serial_after(5001, 4000) == 5002  # a clock behind the last serial
    assert serial_after(2**32 - 1, 10) == 10 and serial_gt(10, 2**32 - 1)  # RFC 1982 wrap
    assert serial_after(2**32 - 1, 2**32 - 1) == 0 and serial_gt(0, 2**32 - 1)


def test_history_is_bounded_then_the_whole_zone() -> None:
    """Past the kept records an old serial has no differences (the primary then sends
    the whole zone); the newer ones still do."""
    from datetime import timedelta

    from blockd.core.index import IndexBuilder

    names = [f"n{i}.example" for i in range(6)]
    orders = [OrderRecord(f"R-{i}", "Court", date(2024, 1, 1), NOW,
                          effective_until=NOW + timedelta(hours=i + 1),
                          targets=frozenset({parse_target(n)})) for i, n in enumerate(names)]
    builder = IndexBuilder(NOW)
    for o in orders:
        builder.load(o)
    zone = Zone(ZoneSettings(apex=APEX), builder.index(), None, 1000, history_records=5)
    serials = [zone.serial]
    for hour in range(1, 5):  # each hour one order ends: two records removed
        builder.advance(NOW + timedelta(hours=hour, minutes=1))
        change = zone.prepare(builder.index(), None)
        assert change is not None and zone.install(change, 0) is not None
        serials.append(zone.serial)
    assert serials == [1000, 1001, 1002, 1003, 1004]
    assert zone.since(serials[0]) is None and zone.since(serials[1]) is None
    kept = zone.since(serials[2])
    assert kept is not None and [d.new_serial for d in kept] == serials[3:]
    assert zone.since(zone.serial) == []
