"""A small, typed nftables layer over netlink (pyroute2's message classes), no `nft` binary.

pyroute2 0.9's high-level nftables API is a prototype (see the nftables issue); this module
builds the few messages blockd needs itself and sends them as one batch, which the kernel
applies atomically: all of it or none of it. Set elements, the bulk of the data, are packed
by hand in wire.py (pyroute2 is slow for them, and its interval-end flag map is broken: a
dict where a tuple is expected, so the flag would have to be written as ``{1}``).
"""

from __future__ import annotations

import bisect
import errno
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_NFTABLES
from pyroute2.netlink.nfnetlink.nftsocket import (
    NFT_MSG_DELSETELEM,
    NFT_MSG_DELTABLE,
    NFT_MSG_NEWCHAIN,
    NFT_MSG_NEWRULE,
    NFT_MSG_NEWSET,
    NFT_MSG_NEWSETELEM,
    NFT_MSG_NEWTABLE,
    nft_chain_msg,
    nft_rule_msg,
    nft_set_msg,
    nft_table_msg,
)

from blockd.core.model import BlockdError
from blockd.nft import wire

NFPROTO_INET = 1
KEY_IPV4, KEY_IPV6 = 7, 8  # nftables data types ipv4_addr, ipv6_addr
HOOK_PREROUTING, HOOK_INPUT, HOOK_FORWARD, HOOK_OUTPUT = 0, 1, 2, 3
NF_DROP, NF_ACCEPT = 0, 1

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class NftError(BlockdError):
    """nftables refused or is unavailable; one line saying why, and the kernel's errno
    (None when it gave none) for callers that must tell the causes apart."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.errno = code


class NftDenied(NftError):
    """No CAP_NET_ADMIN."""


class NftUnavailable(NftError):
    """No nf_tables in this kernel."""


class NftMissing(NftError):
    """The table, chain or set named does not exist (ENOENT)."""


def explain(exc: BaseException) -> NftError:
    code = getattr(exc, "code", None) or getattr(exc, "errno", None)
    if not isinstance(code, int):
        code = None
    if code in (errno.EPERM, errno.EACCES):
        return NftDenied("nftables: permission denied (needs root or CAP_NET_ADMIN)", code)
    if code in (errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.EOPNOTSUPP):
        return NftUnavailable("nftables: nf_tables is not available in this kernel", code)
    if code == errno.ENOENT:
        return NftMissing(f"nftables: the kernel refused the change ({exc})", code)
    return NftError(f"nftables: the kernel refused the change ({exc})", code)


def _message(cls: type, mtype: int, attrs: list[Any], flags: int = NLM_F_CREATE) -> Any:
    m = cls()
    m["attrs"] = attrs
    m["nfgen_family"] = NFPROTO_INET
    m["header"]["type"] = (NFNL_SUBSYS_NFTABLES << 8) | mtype
    m["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
    return m


def expr(name: str, *attrs: tuple[str, Any]) -> dict[str, Any]:
    body: list[Any] = [("NFTA_EXPR_NAME", name)]
    if attrs:
        body.append(("NFTA_EXPR_DATA", {"attrs": list(attrs)}))
    return {"attrs": body}


def data(value: bytes) -> dict[str, Any]:
    return {"attrs": [("NFTA_DATA_VALUE", value)]}


def verdict(code: int) -> dict[str, Any]:
    return {"attrs": [("NFTA_DATA_VERDICT", {"attrs": [("NFTA_VERDICT_CODE", code)]})]}


def interval_keys(networks: Iterable[Network]) -> list[tuple[bytes, bool]]:
    """Each prefix as a start key and an interval-end key one past its last address
    (none past the top of the address space)."""
    out: list[tuple[bytes, bool]] = []
    for net in networks:
        size = 4 if net.version == 4 else 16
        out.append((net.network_address.packed, False))
        end = int(net.broadcast_address) + 1
        if end < 1 << (size * 8):
            out.append((end.to_bytes(size, "big"), True))
    return out


@dataclass(frozen=True, slots=True)
class RawElements:
    """A NEW/DELSETELEM message, packed by hand at send time (see wire.py)."""

    mtype: int
    set_name: str
    keys: list[tuple[bytes, bool]]
    flags: int


@dataclass
class Batch:
    """Messages to apply in one kernel transaction."""

    table: str
    messages: list[Any] = field(default_factory=list)

    def add_table(self) -> None:
        self.messages.append(_message(nft_table_msg, NFT_MSG_NEWTABLE, [
            ("NFTA_TABLE_NAME", self.table), ("NFTA_TABLE_FLAGS", 0)]))

    def delete_table(self) -> None:
        self.messages.append(_message(nft_table_msg, NFT_MSG_DELTABLE, [
            ("NFTA_TABLE_NAME", self.table)], flags=0))

    def add_set(self, name: str, version: int, set_id: int) -> None:
        """An interval set of addresses with a counter on every element."""
        self.messages.append(_message(nft_set_msg, NFT_MSG_NEWSET, [
            ("NFTA_SET_TABLE", self.table), ("NFTA_SET_NAME", name),
            ("NFTA_SET_FLAGS", {"NFT_SET_INTERVAL"}),
            ("NFTA_SET_KEY_TYPE", KEY_IPV4 if version == 4 else KEY_IPV6),
            ("NFTA_SET_KEY_LEN", 4 if version == 4 else 16),
            ("NFTA_SET_ID", set_id),
            ("NFTA_SET_EXPR", {"attrs": [("NFTA_EXPR_NAME", "counter")]}),
        ]))

    def add_elements(self, set_name: str, networks: Iterable[Network]) -> None:
        self._elements(NFT_MSG_NEWSETELEM, set_name, networks)

    def delete_elements(self, set_name: str, networks: Iterable[Network]) -> None:
        self._elements(NFT_MSG_DELSETELEM, set_name, networks, flags=0)

    def _elements(self, mtype: int, set_name: str, networks: Iterable[Network],
                  flags: int = NLM_F_CREATE) -> None:
        keys = interval_keys(networks)
        for i in range(0, len(keys), 2000):  # keep each message well under 64 KiB
            self.messages.append(
                RawElements(mtype, set_name, keys[i : i + 2000], NLM_F_REQUEST | NLM_F_ACK
                            | flags))

    def add_chain(self, name: str, hook: int, priority: int, kind: str = "filter") -> None:
        self.messages.append(_message(nft_chain_msg, NFT_MSG_NEWCHAIN, [
            ("NFTA_CHAIN_TABLE", self.table), ("NFTA_CHAIN_NAME", name),
            ("NFTA_CHAIN_HOOK", {"attrs": [("NFTA_HOOK_HOOKNUM", hook),
                                           ("NFTA_HOOK_PRIORITY", priority)]}),
            ("NFTA_CHAIN_TYPE", kind), ("NFTA_CHAIN_POLICY", NF_ACCEPT),
        ]))

    def add_rule(self, chain: str, expressions: list[dict[str, Any]]) -> None:
        self.messages.append(_message(nft_rule_msg, NFT_MSG_NEWRULE, [
            ("NFTA_RULE_TABLE", self.table), ("NFTA_RULE_CHAIN", chain),
            ("NFTA_RULE_EXPRESSIONS", expressions),
        ], flags=NLM_F_CREATE | NLM_F_APPEND))


def daddr_in_set_rule(version: int, set_name: str, final: list[dict[str, Any]]
                      ) -> list[dict[str, Any]]:
    """``ip[6] daddr @set counter <final>``: match the family, load the destination, look up."""
    proto = b"\x02" if version == 4 else b"\x0a"  # NFPROTO_IPV4 / NFPROTO_IPV6
    offset, length = (16, 4) if version == 4 else (24, 16)
    return [
        expr("meta", ("NFTA_META_KEY", 15), ("NFTA_META_DREG", 1)),  # nfproto
        expr("cmp", ("NFTA_CMP_SREG", 1), ("NFTA_CMP_OP", 0), ("NFTA_CMP_DATA", data(proto))),
        expr("payload", ("NFTA_PAYLOAD_DREG", 1), ("NFTA_PAYLOAD_BASE", 1),
             ("NFTA_PAYLOAD_OFFSET", offset), ("NFTA_PAYLOAD_LEN", length)),
        expr("lookup", ("NFTA_LOOKUP_SET", set_name), ("NFTA_LOOKUP_SREG", 1)),
        expr("counter"),
        *final,
    ]


def match_tcp_dport(port: int) -> list[dict[str, Any]]:
    """``meta l4proto tcp th dport PORT`` (register 1 is free again after a lookup)."""
    return [
        expr("meta", ("NFTA_META_KEY", 16), ("NFTA_META_DREG", 1)),  # l4proto
        expr("cmp", ("NFTA_CMP_SREG", 1), ("NFTA_CMP_OP", 0), ("NFTA_CMP_DATA", data(b"\x06"))),
        expr("payload", ("NFTA_PAYLOAD_DREG", 1), ("NFTA_PAYLOAD_BASE", 2),
             ("NFTA_PAYLOAD_OFFSET", 2), ("NFTA_PAYLOAD_LEN", 2)),
        expr("cmp", ("NFTA_CMP_SREG", 1), ("NFTA_CMP_OP", 0),
             ("NFTA_CMP_DATA", data(port.to_bytes(2, "big")))),
    ]


def match_tcp() -> list[dict[str, Any]]:
    return [
        expr("meta", ("NFTA_META_KEY", 16), ("NFTA_META_DREG", 1)),
        expr("cmp", ("NFTA_CMP_SREG", 1), ("NFTA_CMP_OP", 0), ("NFTA_CMP_DATA", data(b"\x06"))),
    ]


def match_daddr(address: ipaddress.IPv4Address | ipaddress.IPv6Address
                ) -> list[dict[str, Any]]:
    """``ip[6] daddr ADDRESS``."""
    proto = b"\x02" if address.version == 4 else b"\x0a"
    offset, length = (16, 4) if address.version == 4 else (24, 16)
    return [
        expr("meta", ("NFTA_META_KEY", 15), ("NFTA_META_DREG", 1)),
        expr("cmp", ("NFTA_CMP_SREG", 1), ("NFTA_CMP_OP", 0), ("NFTA_CMP_DATA", data(proto))),
        expr("payload", ("NFTA_PAYLOAD_DREG", 1), ("NFTA_PAYLOAD_BASE", 1),
             ("NFTA_PAYLOAD_OFFSET", offset), ("NFTA_PAYLOAD_LEN", length)),
        expr("cmp", ("NFTA_CMP_SREG", 1), ("NFTA_CMP_OP", 0),
             ("NFTA_CMP_DATA", data(address.packed))),
    ]


def reject_tcp_reset() -> list[dict[str, Any]]:
    return [expr("reject", ("NFTA_REJECT_TYPE", 1))]


def reject_admin_prohibited() -> list[dict[str, Any]]:
    """ICMP(v6) administratively prohibited, whatever the family (icmpx)."""
    return [expr("reject", ("NFTA_REJECT_TYPE", 2), ("NFTA_REJECT_ICMP_CODE", 3))]


def dnat(address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
         ) -> list[dict[str, Any]]:
    """``dnat ip[6] to ADDRESS:PORT``."""
    return [
        expr("immediate", ("NFTA_IMMEDIATE_DREG", 1), ("NFTA_IMMEDIATE_DATA",
                                                       data(address.packed))),
        expr("immediate", ("NFTA_IMMEDIATE_DREG", 2), ("NFTA_IMMEDIATE_DATA",
                                                       data(port.to_bytes(2, "big")))),
        expr("nat", ("NFTA_NAT_TYPE", 1), ("NFTA_NAT_FAMILY", 2 if address.version == 4 else 10),
             ("NFTA_NAT_REG_ADDR_MIN", 1), ("NFTA_NAT_REG_PROTO_MIN", 2)),
    ]


def drop() -> list[dict[str, Any]]:
    return [expr("immediate", ("NFTA_IMMEDIATE_DREG", 0),
                 ("NFTA_IMMEDIATE_DATA", verdict(NF_DROP)))]


def apply(batch: Batch) -> None:
    """Send the batch; the kernel applies every message or none (NftError on refusal)."""
    if not batch.messages:
        return
    try:
        with wire.Socket() as sock:
            parts, acks = [], set()
            for m in batch.messages:
                seq = sock.next_seq()
                if isinstance(m, RawElements):
                    parts.append(wire.elements(m.mtype, batch.table, m.set_name, m.keys, seq,
                                               m.flags))
                else:
                    parts.append(wire.encoded(m, seq))
                acks.add(seq)
            sock.transact(parts, acks)
    except OSError as exc:
        raise explain(exc) from None


def existing_sets(table: str) -> set[str]:
    """Names of the sets of ``inet <table>`` (empty if the table does not exist)."""
    try:
        with wire.Socket() as sock:
            names = set()
            for payload in sock.dump(wire.NFT_MSG_GETSET, b""):
                found = dict(wire.attrs(payload))
                if found.get(1, b"").rstrip(b"\0").decode() == table:
                    names.add(found.get(2, b"").rstrip(b"\0").decode())
            return names
    except OSError as exc:
        raise explain(exc) from None


def read_set(table: str, set_name: str, version: int) -> dict[Network, tuple[int, int]]:
    """The prefixes in a set with their (packets, bytes) counters."""
    try:
        with wire.Socket() as sock:
            raw = wire.set_elements(sock, table, set_name)
    except OSError as exc:
        raise explain(exc) from None
    size = 4 if version == 4 else 16
    starts = sorted((int.from_bytes(k, "big"), p, b) for k, end, p, b in raw if not end)
    ends = sorted(int.from_bytes(k, "big") for k, end, _, _ in raw if end)
    out: dict[Network, tuple[int, int]] = {}
    for start, packets, bytes_ in starts:
        i = bisect.bisect_right(ends, start)
        stop = ends[i] if i < len(ends) else 1 << (size * 8)
        for net in ipaddress.summarize_address_range(
                ipaddress.ip_address(start.to_bytes(size, "big")),
                ipaddress.ip_address((stop - 1).to_bytes(size, "big"))):
            out[net] = (packets, bytes_)
    return out
