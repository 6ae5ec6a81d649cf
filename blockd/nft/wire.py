"""Netlink bytes for the bulk of nftables work: set elements, batches, acks and dumps.

pyroute2 encodes and decodes each attribute as a Python object, which costs seconds for
100k prefixes. Set elements are the only bulk data, so they are packed and parsed here
by hand (a few struct calls each); the handful of table/chain/set/rule messages are still
built with pyroute2's classes and only their bytes are taken.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterable, Iterator
from typing import Any

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP = 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 0x8000
BATCH_BEGIN, BATCH_END = 0x10, 0x11
NFT_MSG_GETSET = 10
NFT_MSG_NEWSETELEM, NFT_MSG_GETSETELEM, NFT_MSG_DELSETELEM = 12, 13, 14
NFPROTO_INET = 1
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_NFGEN = struct.Struct("=BBH")  # family, version, res_id (network order, set by caller)


class KernelError(OSError):
    pass


def attr(atype: int, payload: bytes, nested: bool = False) -> bytes:
    length = 4 + len(payload)
    return (struct.pack("=HH", length, atype | (NLA_F_NESTED if nested else 0)) + payload
            + b"\0" * (-length % 4))


def message(mtype: int, flags: int, seq: int, body: bytes, family: int = NFPROTO_INET,
            res_id: int = 0) -> bytes:
    payload = _NFGEN.pack(family, 0, socket.htons(res_id)) + body
    return _HDR.pack(_HDR.size + len(payload), mtype, flags, seq, 0) + payload


def batch_marker(kind: int, seq: int) -> bytes:
    return message(kind, NLM_F_REQUEST, seq, b"", family=0, res_id=NFNL_SUBSYS_NFTABLES)


def elements(mtype: int, table: str, set_name: str, keys: Iterable[tuple[bytes, bool]],
             seq: int, flags: int) -> bytes:
    """NEW/DELSETELEM with (key, is_interval_end) elements."""
    elems = b"".join(
        attr(1, attr(1, attr(1, key), nested=True)
             + (attr(3, struct.pack("!I", 1)) if end else b""), nested=True)
        for key, end in keys)
    body = (attr(1, table.encode() + b"\0") + attr(2, set_name.encode() + b"\0")
            + attr(3, elems, nested=True))
    return message((NFNL_SUBSYS_NFTABLES << 8) | mtype, flags, seq, body)


def attrs(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
    pos, end = start, len(data) if end is None else end
    while pos + 4 <= end:
        length, atype = struct.unpack_from("=HH", data, pos)
        if length < 4:
            break
        yield atype & ~NLA_F_NESTED & 0x7FFF, data[pos + 4 : pos + length]
        pos += (length + 3) & ~3


class Socket:
    """A raw NETLINK_NETFILTER socket: send one batch, collect its acks; dump elements."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        self.seq = int.from_bytes(os.urandom(3), "big")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def transact(self, parts: list[bytes], expect_acks: set[int]) -> None:
        """Send BEGIN + parts + END as one datagram; raise KernelError on the first error."""
        data = batch_marker(BATCH_BEGIN, self.next_seq()) + b"".join(parts) + \
            batch_marker(BATCH_END, self.next_seq())
        self.sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, len(data) * 2 + 65536)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        self.sock.send(data)
        pending = set(expect_acks)
        self.sock.settimeout(10)
        while pending:
            for mtype, _, seq, payload in self._receive():
                if mtype != NLMSG_ERROR:
                    continue
                (code,) = struct.unpack_from("=i", payload)
                if code != 0:
                    raise KernelError(-code, os.strerror(-code))
                pending.discard(seq)

    def dump(self, mtype: int, body: bytes) -> Iterator[bytes]:
        """Payloads (after the nfgen header) of a dump's answers."""
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
        seq = self.next_seq()
        self.sock.send(message((NFNL_SUBSYS_NFTABLES << 8) | mtype,
                               NLM_F_REQUEST | NLM_F_DUMP, seq, body))
        self.sock.settimeout(10)
        while True:
            for rtype, _, rseq, payload in self._receive():
                if rseq != seq:
                    continue
                if rtype == NLMSG_DONE:
                    return
                if rtype == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", payload)
                    if code != 0:
                        raise KernelError(-code, os.strerror(-code))
                    return
                yield payload[_NFGEN.size :]

    def _receive(self) -> Iterator[tuple[int, int, int, bytes]]:
        data = self.sock.recv(1 << 20)
        pos = 0
        while pos + _HDR.size <= len(data):
            length, mtype, flags, seq, _ = _HDR.unpack_from(data, pos)
            if length < _HDR.size:
                break
            yield mtype, flags, seq, data[pos + _HDR.size : pos + length]
            pos += (length + 3) & ~3


def set_elements(sock: Socket, table: str, set_name: str
                 ) -> list[tuple[bytes, bool, int, int]]:
    """(key, is_interval_end, packets, bytes) of every element of a set."""
    body = attr(1, table.encode() + b"\0") + attr(2, set_name.encode() + b"\0")
    out: list[tuple[bytes, bool, int, int]] = []
    for payload in sock.dump(NFT_MSG_GETSETELEM, body):
        for atype, value in attrs(payload):
            if atype != 3:
                continue
            for _, elem in attrs(value):
                key, end, packets, nbytes = b"", False, 0, 0
                for etype, evalue in attrs(elem):
                    if etype == 1:
                        key = next((v for t, v in attrs(evalue) if t == 1), b"")
                    elif etype == 3:
                        end = bool(struct.unpack("!I", evalue[:4])[0] & 1)
                    elif etype == 7:
                        expr = dict(attrs(evalue))
                        if expr.get(1, b"").rstrip(b"\0") == b"counter" and 2 in expr:
                            stats = dict(attrs(expr[2]))
                            nbytes = struct.unpack("!Q", stats.get(1, bytes(8))[:8])[0]
                            packets = struct.unpack("!Q", stats.get(2, bytes(8))[:8])[0]
                out.append((key, end, packets, nbytes))
    return out


def encoded(msg: Any, seq: int) -> bytes:
    """The bytes of a pyroute2 message, with our sequence number."""
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)
