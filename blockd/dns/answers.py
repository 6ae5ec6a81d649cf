"""Blocked answers: what a subscriber's resolver receives for a name under an order.

Built once per (name, type, EDNS, DO) and kept until the policy changes, as the part of
the message after the question; each answer then costs a header and a copy of the
client's question. Every blocked answer carries EDE 16 "Censored" naming the order when
the query had EDNS, and uses the order's policy TTL (also as the SOA minimum, so negative
answers are cached no longer than that). A negative answer's SOA is owned by the blocked
target's parent (see :func:`soa_owner`), never by a name the answer says does not exist.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from blockd.core.index import Match
from blockd.core.model import Action
from blockd.dns import wire

if TYPE_CHECKING:
    from blockd.core.enforcement import EnforcementPolicy

SOA_MNAME = "blockd.invalid"
SOA_RNAME = "hostmaster.blockd.invalid"
MAX_EDE_TEXT = 300  # keep blocked answers far below the 512-byte floor


@dataclass(frozen=True, slots=True)
class Tail:
    """Everything of a response but the header's ID/RD and the question."""

    rcode: int
    an: int
    ns: int
    ar: int
    body: bytes
    aa: bool = True

    def render(self, query: wire.Query) -> bytes:
        flags = wire.response_flags(query.flags, self.rcode, aa=self.aa)
        return wire.header(query.id, flags, self.an, self.ns, self.ar) + query.question + self.body


def soa_owner(query: wire.Query, match: Match) -> bytes:
    """Where the SOA of a blocked negative answer lives (RFC 2308): at a synthetic zone
    that contains the query name and that the answer does not deny, i.e. the parent of
    the blocked target (the name's own parent for a block through a CNAME chain). A
    pointer into the question, or the root."""
    qname = query.question[:-4]
    offsets = []  # where each label of the question's name starts
    pos = 0
    while qname[pos]:
        offsets.append(pos)
        pos += 1 + qname[pos]
    name, target = query.policy_name, match.target.value
    under = name == target or name.endswith("." + target)
    # labels to keep: the target's parent's, else (a CNAME-chain block) the name's parent's
    keep = target.count(".") if under else len(offsets) - 1
    if keep <= 0 or keep >= len(offsets):
        return b"\x00"
    start = 12 + offsets[len(offsets) - keep]
    return bytes([0xC0 | start >> 8, start & 0xFF])


# what a cached tail costs beyond its bytes (key tuple, Tail object, dict slot; measured
# with tracemalloc: about 270 bytes each)
TAIL_OVERHEAD = 250


class BlockedAnswers:
    """Builds blocked-answer tails for a policy snapshot; cache cleared on every swap."""

    def __init__(
        self, policies: Mapping[str, EnforcementPolicy], notice_ipv4: str | None,
        notice_ipv6: str | None, notice_url: str, serial: int = 0,
    ) -> None:
        self.policies = policies
        self.notice_v4 = ipaddress.IPv4Address(notice_ipv4).packed if notice_ipv4 else None
        self.notice_v6 = ipaddress.IPv6Address(notice_ipv6).packed if notice_ipv6 else None
        self.notice_url = notice_url
        self.serial = serial
        self._cache: dict[tuple[object, ...], Tail] = {}
        self.max_bytes = 4 * 1024 * 1024  # the resolver sets its share of [dns] memo_mb
        self.bytes = 0

    def clear(self, serial: int) -> None:
        self.serial = serial
        self._cache.clear()
        self.bytes = 0

    def policy_of(self, match: Match) -> EnforcementPolicy | None:
        return self.policies.get(match.order.policy) or self.policies.get("default")

    def ede_text(self, match: Match) -> str:
        policy = self.policy_of(match)
        order = match.order
        if policy is None:
            text = f"blocked under order {order.reference} of {order.authority}"
        else:
            text = policy.ede(order.reference, order.authority, self.notice_url,
                              order.jurisdiction or "")
        encoded = text.encode("utf-8")[:MAX_EDE_TEXT]
        return encoded.decode("utf-8", "ignore")

    def tail(self, query: wire.Query, match: Match) -> Tail:
        """The answer after the question, cached. A notice address answer points at the
        question's name and carries the order's EDE text, so it is kept per (order, type,
        EDNS, DO): every name of every target of an order shares one (an order of 100k
        targets, each name asked once, builds a handful); other answers carry an SOA
        placed by the name, and are kept per name."""
        qtype = query.qtype
        if match.action is Action.NOTICE and (
                (self.notice_v4 and qtype in (wire.T_A, wire.T_ANY))
                or (self.notice_v6 and qtype == wire.T_AAAA)):
            key: tuple[object, ...] = (match.order.reference, qtype, query.edns, query.do)
        else:
            key = (query.name, qtype, query.edns, query.do)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._build(query, match)
            size = len(cached.body) + TAIL_OVERHEAD
            if self.bytes + size > self.max_bytes:  # full: start over (see DnsService)
                self._cache.clear()
                self.bytes = 0
            self._cache[key] = cached
            self.bytes += size
        return cached

    def _build(self, query: wire.Query, match: Match) -> Tail:
        policy = self.policy_of(match)
        ttl = policy.dns_ttl if policy else 30
        action = match.action
        rcode = wire.NOERROR
        answers: list[bytes] = []
        if action is Action.NXDOMAIN:
            rcode = wire.NXDOMAIN
        elif action is Action.REFUSED:
            rcode = wire.REFUSED
        elif action is Action.NOTICE:
            if query.qtype in (wire.T_A, wire.T_ANY) and self.notice_v4:
                answers.append(wire.rr(wire.POINTER_TO_QNAME, wire.T_A, ttl, self.notice_v4))
            elif query.qtype == wire.T_AAAA and self.notice_v6:
                answers.append(wire.rr(wire.POINTER_TO_QNAME, wire.T_AAAA, ttl, self.notice_v6))
        authority: list[bytes] = []
        if not answers and rcode != wire.REFUSED:
            soa = wire.soa_rdata(SOA_MNAME, SOA_RNAME, self.serial, ttl)
            authority.append(wire.rr(soa_owner(query, match), wire.T_SOA, ttl, soa))
        additional = b""
        if query.edns:
            additional = wire.opt_record(
                query.do, wire.ede_option(wire.EDE_CENSORED, self.ede_text(match)))
        return Tail(
            rcode, len(answers), len(authority), 1 if query.edns else 0,
            b"".join(answers) + b"".join(authority) + additional,
            aa=rcode != wire.REFUSED,
        )
