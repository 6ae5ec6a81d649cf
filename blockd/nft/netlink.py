"""A small, typed nftables layer over netlink (pyroute2's message classes), no `nft` binary.

pyroute2 0.9's high-level nftables API is a prototype (see the nftables issue); this module
builds the few messages blockd needs itself and sends them as one batch, which the kernel
applies atomically: all of it or none of it. Known pyroute2 quirk worked around here: the
set-element flag map is a dict, so its "interval end" flag must be given as ``{1}``.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_NFTABLES, nfgen_msg
from pyroute2.netlink.nfnetlink.nftsocket import (
    NFT_MSG_DELSETELEM,
    NFT_MSG_DELTABLE,
    NFT_MSG_GETSET,
    NFT_MSG_GETSETELEM,
    NFT_MSG_NEWCHAIN,
    NFT_MSG_NEWRULE,
    NFT_MSG_NEWSET,
    NFT_MSG_NEWSETELEM,
    NFT_MSG_NEWTABLE,
    AsyncNFTSocket,
    nft_chain_msg,
    nft_rule_msg,
    nft_set_elem_list_msg,
    nft_set_msg,
    nft_table_msg,
)

from blockd.core.model import BlockdError

NFPROTO_INET = 1
BATCH_BEGIN, BATCH_END = 0x10, 0x11
KEY_IPV4, KEY_IPV6 = 7, 8  # nftables data types ipv4_addr, ipv6_addr
INTERVAL_END = {1}  # see the module docstring
HOOK_FORWARD, HOOK_OUTPUT = 2, 3
NF_DROP, NF_ACCEPT = 0, 1

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class NftError(BlockdError):
    """nftables refused or is unavailable; one line saying why."""


def explain(exc: BaseException) -> NftError:
    code = getattr(exc, "code", None) or getattr(exc, "errno", None)
    if code in (errno.EPERM, errno.EACCES):
        return NftError("nftables: permission denied (needs root or CAP_NET_ADMIN)")
    if code in (errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.EOPNOTSUPP):
        return NftError("nftables: nf_tables is not available in this kernel")
    return NftError(f"nftables: the kernel refused the change ({exc})")


def _message(cls: type, mtype: int, attrs: list[Any], flags: int = NLM_F_CREATE) -> Any:
    m = cls()
    m["attrs"] = attrs
    m["nfgen_family"] = NFPROTO_INET
    m["header"]["type"] = (NFNL_SUBSYS_NFTABLES << 8) | mtype
    m["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
    return m


def _batch_marker(kind: int) -> Any:
    m = nfgen_msg()
    m["res_id"] = NFNL_SUBSYS_NFTABLES
    m["header"]["type"] = kind
    m["header"]["flags"] = NLM_F_REQUEST
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


def interval_elements(networks: Iterable[Network]) -> list[dict[str, Any]]:
    """Each prefix as a start element and an interval-end element one past its last address
    (none past the top of the address space)."""
    out: list[dict[str, Any]] = []
    for net in networks:
        size = 4 if net.version == 4 else 16
        out.append({"attrs": [("NFTA_SET_ELEM_KEY", data(net.network_address.packed))]})
        end = int(net.broadcast_address) + 1
        if end < 1 << (size * 8):
            out.append({"attrs": [("NFTA_SET_ELEM_KEY", data(end.to_bytes(size, "big"))),
                                  ("NFTA_SET_ELEM_FLAGS", INTERVAL_END)]})
    return out


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
        elements = interval_elements(networks)
        for i in range(0, len(elements), 2000):  # keep each message well under 64 KiB
            self.messages.append(_message(nft_set_elem_list_msg, mtype, [
                ("NFTA_SET_ELEM_LIST_TABLE", self.table),
                ("NFTA_SET_ELEM_LIST_SET", set_name),
                ("NFTA_SET_ELEM_LIST_ELEMENTS", elements[i : i + 2000]),
            ], flags=flags))

    def add_chain(self, name: str, hook: int, priority: int) -> None:
        self.messages.append(_message(nft_chain_msg, NFT_MSG_NEWCHAIN, [
            ("NFTA_CHAIN_TABLE", self.table), ("NFTA_CHAIN_NAME", name),
            ("NFTA_CHAIN_HOOK", {"attrs": [("NFTA_HOOK_HOOKNUM", hook),
                                           ("NFTA_HOOK_PRIORITY", priority)]}),
            ("NFTA_CHAIN_TYPE", "filter"), ("NFTA_CHAIN_POLICY", NF_ACCEPT),
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


def drop() -> list[dict[str, Any]]:
    return [expr("immediate", ("NFTA_IMMEDIATE_DREG", 0),
                 ("NFTA_IMMEDIATE_DATA", verdict(NF_DROP)))]


async def _send(messages: list[Any]) -> None:
    sock = AsyncNFTSocket(nfgen_family=NFPROTO_INET)
    try:
        await sock.setup_endpoint()
        async for _ in sock.nlm_request_batch(
                [_batch_marker(BATCH_BEGIN), *messages, _batch_marker(BATCH_END)]):
            pass
    finally:
        sock.close()


def apply(batch: Batch) -> None:
    """Send the batch; the kernel applies every message or none (NftError on refusal)."""
    if not batch.messages:
        return
    try:
        asyncio.run(_send(batch.messages))
    except (NetlinkError, OSError) as exc:
        raise explain(exc) from None


async def _dump_elements(table: str, set_name: str) -> list[tuple[bytes, bool, int, int]]:
    sock = AsyncNFTSocket(nfgen_family=NFPROTO_INET)
    try:
        await sock.setup_endpoint()
        msg = nft_set_elem_list_msg()
        msg["attrs"] = [("NFTA_SET_ELEM_LIST_TABLE", table), ("NFTA_SET_ELEM_LIST_SET", set_name)]
        out: list[tuple[bytes, bool, int, int]] = []
        async for reply in await sock.request_get(msg, NFT_MSG_GETSETELEM):
            for elem in reply.get_attr("NFTA_SET_ELEM_LIST_ELEMENTS") or []:
                key = elem.get_attr("NFTA_SET_ELEM_KEY").get_attr("NFTA_DATA_VALUE")
                flags = elem.get_attr("NFTA_SET_ELEM_FLAGS") or 0
                is_end = bool(flags)
                packets = bytes_ = 0
                counter = elem.get_attr("NFTA_SET_ELEM_EXPR")
                if counter is not None and counter.get_attr("NFTA_EXPR_NAME") == "counter":
                    stats = counter.get_attr("NFTA_EXPR_DATA")
                    packets = stats.get_attr("NFTA_COUNTER_PACKETS") or 0
                    bytes_ = stats.get_attr("NFTA_COUNTER_BYTES") or 0
                out.append((bytes(key), is_end, packets, bytes_))
        return out
    finally:
        sock.close()


async def _sets(table: str) -> set[str]:
    sock = AsyncNFTSocket(nfgen_family=NFPROTO_INET)
    try:
        await sock.setup_endpoint()
        names = set()
        async for reply in await sock.request_get(nfgen_msg(), NFT_MSG_GETSET):
            if reply.get_attr("NFTA_SET_TABLE") == table:
                names.add(reply.get_attr("NFTA_SET_NAME"))
        return names
    finally:
        sock.close()


def existing_sets(table: str) -> set[str]:
    try:
        return asyncio.run(_sets(table))
    except (NetlinkError, OSError) as exc:
        raise explain(exc) from None


def read_set(table: str, set_name: str, version: int) -> dict[Network, tuple[int, int]]:
    """The prefixes in a set with their (packets, bytes) counters."""
    try:
        raw = asyncio.run(_dump_elements(table, set_name))
    except (NetlinkError, OSError) as exc:
        raise explain(exc) from None
    size = 4 if version == 4 else 16
    starts = sorted((int.from_bytes(k, "big"), p, b) for k, end, p, b in raw if not end)
    ends = sorted(int.from_bytes(k, "big") for k, end, _, _ in raw if end)
    out: dict[Network, tuple[int, int]] = {}
    for start, packets, bytes_ in starts:
        stop = next((e for e in ends if e > start), 1 << (size * 8))
        for net in ipaddress.summarize_address_range(
                ipaddress.ip_address(start.to_bytes(size, "big")),
                ipaddress.ip_address((stop - 1).to_bytes(size, "big"))):
            out[net] = (packets, bytes_)
    return out
