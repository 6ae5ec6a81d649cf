"""The primary for the policy zone, sans-I/O: versions of the zone, queries, AXFR (RFC
5936), IXFR (RFC 1995) and NOTIFY (RFC 1996) messages as bytes in, bytes out.

A :class:`Zone` holds the version in force (an immutable block index, its journal head
and its serial) and the differences between the last versions, each computed once when
the version changed (a journal entry, or an order entering or leaving force by the
clock). Transfers are streamed from the index slot by slot, in messages under
:data:`MESSAGE_LIMIT`, so a zone of a million targets is never built in memory.

Queries are parsed by dnspython inside one broad ``except``: a packet that makes any
parser raise gets FORMERR (or nothing, without a header), never a crash. TSIG
(HMAC-SHA256) is dnspython's: it verifies the request and signs every message of the
answer (RFC 8945 5.3.1); nothing here touches an HMAC.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import struct
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig

from blockd.core.index import BlockIndex, SlotKey
from blockd.core.model import BlockdError
from blockd.rpz.zone import (
    Record,
    SlotWire,
    WireCache,
    ZoneSettings,
    apex_records,
    name_wire,
    slot_records,
)

MESSAGE_LIMIT = 32_768
"""Bytes per transfer message at most (the TCP length prefix allows 65,535)."""
HISTORY_RECORDS = 200_000
"""Changed records kept for IXFR across all differences; older ones are dropped, and a
secondary that far behind gets the whole zone (RFC 1995 4: AXFR-style answer)."""
HISTORY_VERSIONS = 1_000

FLAG_QR, FLAG_AA, FLAG_RD = 0x8000, 0x0400, 0x0100
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, NOTAUTH = 0, 1, 2, 3, 4, 5, 9


class TsigKeyError(BlockdError):
    """The TSIG key file cannot be used: one line naming the file and the problem."""


# -- serials -------------------------------------------------------------------------


def serial_after(previous: int, now: int) -> int:
    """The next serial: the clock's seconds (so a restarted primary is ahead of what its
    secondaries hold) unless that would not be an increase, then ``previous + 1``."""
    return now if serial_gt(now, previous) and now - previous < 2**31 else (previous + 1) % 2**32


def serial_gt(a: int, b: int) -> bool:
    """RFC 1982 serial number arithmetic: ``a`` is after ``b``."""
    return a != b and ((a - b) % 2**32) < 2**31


# -- versions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Version:
    """One version of the zone."""

    serial: int
    index: BlockIndex
    seq: int
    head_hash: str | None
    apex: tuple[Record, ...]

    @property
    def soa(self) -> Record:
        return self.apex[0]


@dataclass(frozen=True, slots=True)
class Delta:
    """What changed from ``old`` to ``new`` (RFC 1995: old SOA, deletions, new SOA,
    additions)."""

    old: Record
    old_serial: int
    new: Record
    new_serial: int
    removed: tuple[Record, ...]
    added: tuple[Record, ...]


@dataclass(frozen=True, slots=True)
class Change:
    """A difference computed from two indexes (in a worker thread), to be installed."""

    base_serial: int
    index: BlockIndex
    seq: int
    head_hash: str | None
    removed: tuple[Record, ...]
    added: tuple[Record, ...]
    stale: bool = False  # the zone moved on while it was computed


def diff(settings: ZoneSettings, old: BlockIndex, new: BlockIndex) -> tuple[
        list[Record], list[Record]]:
    """(removed, added) policy records from ``old`` to ``new``: the changed slots'
    records compared, or every slot's when the index cannot name the changed ones."""
    keys: Iterable[SlotKey] | None = new.changed_keys(old)
    if keys is None:
        keys = dict.fromkeys([*old.slots(), *new.slots()])
    removed: list[Record] = []
    added: list[Record] = []
    for key in keys:
        before = slot_records(old, key, settings)
        after = slot_records(new, key, settings)
        if before != after:
            b, a = set(before), set(after)
            removed.extend(r for r in before if r not in a)
            added.extend(r for r in after if r not in b)
    return removed, added


class Zone:
    """The versions of the policy zone a primary serves."""

    def __init__(self, settings: ZoneSettings, index: BlockIndex, head_hash: str | None,
                 serial: int, *, history_records: int = HISTORY_RECORDS) -> None:
        self.settings = settings
        self.history_records = history_records
        self.current = self._version(serial, index, index.seq, head_hash)
        self.deltas: deque[Delta] = deque()
        self._kept = 0

    def _version(self, serial: int, index: BlockIndex, seq: int,
                 head_hash: str | None) -> Version:
        return Version(serial, index, seq, head_hash,
                       tuple(apex_records(self.settings, serial, seq, head_hash)))

    @property
    def serial(self) -> int:
        return self.current.serial

    def prepare(self, index: BlockIndex, head_hash: str | None) -> Change | None:
        """The change to ``index`` (None if the zone would not change). Pure and slow (a
        pass over the slot tables): run it in a worker thread."""
        cur = self.current
        if index.seq == cur.seq and head_hash == cur.head_hash and index is cur.index:
            return None
        removed, added = diff(self.settings, cur.index, index)
        if not removed and not added and index.seq == cur.seq and head_hash == cur.head_hash:
            return None
        return Change(cur.serial, index, index.seq, head_hash, tuple(removed), tuple(added))

    def install(self, change: Change, now: int) -> Delta | None:
        """Make ``change`` the current version with the next serial; None (nothing
        installed) if another change came first."""
        cur = self.current
        if change.base_serial != cur.serial:
            return None
        new = self._version(serial_after(cur.serial, now), change.index, change.seq,
                            change.head_hash)
        removed = [r for r in cur.apex[1:] if r not in new.apex] + list(change.removed)
        added = [r for r in new.apex[1:] if r not in cur.apex] + list(change.added)
        delta = Delta(cur.soa, cur.serial, new.soa, new.serial, tuple(removed), tuple(added))
        self.current = new
        self.deltas.append(delta)
        self._kept += len(removed) + len(added)
        while self.deltas and (self._kept > self.history_records
                               or len(self.deltas) > HISTORY_VERSIONS):
            gone = self.deltas.popleft()
            self._kept -= len(gone.removed) + len(gone.added)
        return delta

    def since(self, serial: int) -> list[Delta] | None:
        """The differences from ``serial`` to the current one; None if not kept."""
        if serial == self.current.serial:
            return []
        for i, d in enumerate(self.deltas):
            if d.old_serial == serial:
                return list(self.deltas)[i:]
        return None

    def records(self, version: Version | None = None) -> Iterator[Record]:
        """The whole zone of ``version`` (default: current) for AXFR: SOA first and
        last (RFC 5936 2.2), streamed slot by slot."""
        v = version or self.current
        yield from v.apex
        settings = self.settings
        for key in v.index.slots():
            yield from slot_records(v.index, key, settings)
        yield v.soa

    def wire(self, version: Version, cache: WireCache) -> Iterator[bytes]:
        """:meth:`records` as wire bytes, the policy records by :class:`SlotWire`'s
        fast path (a million slots in seconds)."""
        for rec in version.apex:
            yield cache.record(rec)
        yield from SlotWire(version.index, self.settings).records()
        yield cache.record(version.soa)

    def lookup(self, version: Version, owner: str) -> list[Record] | None:
        """The records of one owner (relative); None if the name does not exist."""
        if owner == "":
            return list(version.apex)
        key = owner_key(owner)
        if key is None:
            return None
        found = [r for r in slot_records(version.index, key, self.settings) if r[0] == owner]
        return found or None


def owner_key(owner: str) -> SlotKey | None:
    """The index slot an owner belongs to (None: no owner blockd would write there)."""
    if owner == "rpz-ip" or owner.endswith(".rpz-ip"):
        from blockd.formats import FormatError
        from blockd.formats.rpz import _ip_trigger

        try:
            target = _ip_trigger(owner.removesuffix("rpz-ip")[:-1], 0)
        except (FormatError, ValueError):
            return None
        net = ipaddress.ip_network(target.value)
        return (net.version, net.prefixlen, int(net.network_address) >> (
            net.max_prefixlen - net.prefixlen))
    name = owner.removeprefix("*.")
    return None if not name or "*" in name else name


# -- TSIG ----------------------------------------------------------------------------

_KEY = re.compile(
    r'key\s+"?(?P<name>[A-Za-z0-9._-]+)"?\s*\{\s*algorithm\s+"?(?P<alg>[a-z0-9-]+)"?\s*;'
    r'\s*secret\s+"(?P<secret>[A-Za-z0-9+/=]+)"\s*;\s*\}\s*;?', re.S)


@dataclass(frozen=True, slots=True)
class TsigKey:
    """One HMAC-SHA256 key, as ``tsig-keygen`` writes it (BIND's key statement)."""

    name: str
    secret: str
    path: Path | None = None

    @classmethod
    def load(cls, path: Path) -> TsigKey:
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise TsigKeyError(f"--tsig-key: {path}: cannot read ({exc})") from None
        found = _KEY.search(text)
        if found is None:
            raise TsigKeyError(f'--tsig-key: {path}: no key "NAME" {{ algorithm ...; '
                               'secret "..."; }; statement (as tsig-keygen writes)')
        if found["alg"] != "hmac-sha256":
            raise TsigKeyError(f"--tsig-key: {path}: algorithm {found['alg']}: only "
                               "hmac-sha256 is supported")
        key = cls(found["name"].rstrip(".").lower() + ".", found["secret"], path)
        key.keyring()  # the secret must be base64 dnspython accepts
        return key

    def keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        try:
            k = dns.tsig.Key(self.name, self.secret, dns.tsig.HMAC_SHA256)
        except Exception as exc:  # binascii.Error and friends
            raise TsigKeyError(f"--tsig-key: {self.path}: bad secret ({exc})") from None
        return {k.name: k}


# -- answering -----------------------------------------------------------------------


@dataclass
class Reply:
    """What to send back (in order; over UDP only the first), and what the client
    learnt: ``kind`` soa, axfr, ixfr (incremental), ixfr-axfr (the whole zone), ixfr-none
    (up to date) with the ``serial`` it got."""

    messages: Iterable[bytes] = ()
    kind: str | None = None
    serial: int | None = None
    # for AXFR and IXFR queries, what the metrics count: the transfer (axfr, ixfr,
    # ixfr_fallback: an IXFR answered with the whole zone) and how it was answered
    # (ok: the records go out; up_to_date; use_tcp: an IXFR over UDP; refused: not
    # allowed, unsigned, or malformed). The daemon turns ok into aborted if the client
    # hangs up before the last message.
    transfer: str | None = None
    outcome: str | None = None


_TRANSFERS = {"axfr": ("axfr", "ok"), "ixfr": ("ixfr", "ok"),
              "ixfr-axfr": ("ixfr_fallback", "ok"), "ixfr-none": ("ixfr", "up_to_date")}


@dataclass
class Primary:
    """Answers a query for the zone: ``answer(bytes, client address, tcp)``."""

    zone: Zone
    allow: Sequence[str] = ("127.0.0.0/8", "::1/128")
    key: TsigKey | None = None
    _nets: list[Any] = field(default_factory=list, init=False, repr=False)
    _keyring: dict[dns.name.Name, dns.tsig.Key] | None = field(default=None, init=False)
    _apex: dns.name.Name = field(default=dns.name.root, init=False)

    def __post_init__(self) -> None:
        self._nets = [ipaddress.ip_network(n, strict=False) for n in self.allow]
        self._keyring = self.key.keyring() if self.key is not None else None
        self._apex = dns.name.from_text(self.zone.settings.apex)

    def allowed(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        return any(ip in n for n in self._nets)

    def answer(self, data: bytes, host: str, tcp: bool) -> Reply:
        """The reply to one message; never raises for what a client sent."""
        try:
            query = dns.message.from_wire(data, keyring=self._keyring)
        except Exception as exc:  # any parse or TSIG failure of hostile bytes
            rcode = _parse_rcode(exc)
            if rcode == NOTAUTH:  # RFC 8945 5.2: NOTAUTH, with the question, unsigned
                try:
                    # a keyring function answering False: read the TSIG, check nothing
                    unsigned = dns.message.from_wire(data, keyring=_unchecked)
                    if not unsigned.flags & dns.flags.QR and len(unsigned.question) == 1:
                        response = dns.message.make_response(unsigned)
                        response.set_rcode(dns.rcode.NOTAUTH)
                        return Reply([response.to_wire()])
                except Exception:  # fall back to the bare header
                    pass
            return Reply(_error_header(data, rcode))
        try:
            reply = self._answer(query, host, tcp)
        except Exception:  # a bug must cost this query, not the server
            return Reply(_error_header(data, SERVFAIL))
        if len(query.question) == 1 and not query.flags & dns.flags.QR and \
                query.opcode() == dns.opcode.QUERY:
            rdtype = query.question[0].rdtype
            if rdtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
                asked = "axfr" if rdtype == dns.rdatatype.AXFR else "ixfr"
                reply.transfer, reply.outcome = _TRANSFERS.get(
                    reply.kind or "", (asked, "refused"))
                if reply.kind is None and asked == "ixfr" and not tcp and \
                        reply.serial is not None:
                    reply.outcome = "use_tcp"
        return reply

    def _answer(self, query: dns.message.Message, host: str, tcp: bool) -> Reply:
        if query.flags & dns.flags.QR:
            return Reply()  # a response (a stray NOTIFY answer): never answer one
        if query.opcode() != dns.opcode.QUERY:
            return self._small(query, NOTIMP if query.opcode() != dns.opcode.NOTIFY
                               else REFUSED)
        if len(query.question) != 1:
            return self._small(query, FORMERR)
        q = query.question[0]
        if not self.allowed(host):
            return self._small(query, REFUSED)
        if q.rdclass != dns.rdataclass.IN or not q.name.is_subdomain(self._apex):
            return self._small(query, REFUSED)
        version = self.zone.current
        if q.rdtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
            if self._keyring is not None and not query.had_tsig:
                return self._small(query, REFUSED)
            if q.name != self._apex:
                return self._small(query, NOTAUTH)
            if q.rdtype == dns.rdatatype.AXFR:
                if not tcp:
                    return self._small(query, FORMERR)  # RFC 5936 4.2: TCP only
                return Reply(self._whole(query, version), "axfr", version.serial)
            return self._ixfr(query, version, tcp)
        return self._query(query, version)

    def _ixfr(self, query: dns.message.Message, version: Version, tcp: bool) -> Reply:
        theirs = [rr for rrset in query.authority for rr in rrset
                  if rrset.rdtype == dns.rdatatype.SOA]
        if len(theirs) != 1:
            return self._small(query, FORMERR)  # RFC 1995 3: the client's SOA
        serial = int(theirs[0].serial)
        soa_only = Reply(self._stream(query, [version.soa]), "ixfr-none", version.serial)
        if serial == version.serial or serial_gt(serial, version.serial):
            return soa_only
        if not tcp:
            soa_only.kind = None  # RFC 1995 2: "use TCP": no transfer happened
            return soa_only  # (its serial says it was answered, not refused)
        deltas = self.zone.since(serial)
        if deltas is None or not deltas or deltas[-1].new_serial != version.serial:
            return Reply(self._whole(query, version), "ixfr-axfr", version.serial)
        return Reply(self._stream(query, _incremental(version, deltas)), "ixfr",
                     version.serial)

    def _query(self, query: dns.message.Message, version: Version) -> Reply:
        """An ordinary question (SOA, NS, TXT, a policy owner): a small answer built by
        dnspython."""
        q = query.question[0]
        owner = q.name.relativize(self._apex).to_text().lower()
        owner = "" if owner == "@" else owner
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        records = self.zone.lookup(version, owner)
        if records is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            wanted = [r for r in records if q.rdtype in (
                dns.rdatatype.ANY, dns.rdatatype.from_text(r[1]))]
            # RFC 1034 4.3.2: a CNAME answers every type
            wanted = wanted or [r for r in records if r[1] == "CNAME"]
            for r in wanted:
                response.answer.append(self._rrset(r, q.name if r[0] == owner else None))
        if not response.answer:
            response.authority.append(self._rrset(version.soa))
        kind = "soa" if q.rdtype == dns.rdatatype.SOA and owner == "" else None
        return Reply([response.to_wire()], kind, version.serial)

    def _rrset(self, rec: Record, name: dns.name.Name | None = None) -> dns.rrset.RRset:
        owner = name or (dns.name.from_text(rec[0], self._apex) if rec[0] else self._apex)
        return dns.rrset.from_text(owner, self.zone.settings.ttl, "IN", rec[1], rec[2])

    def _small(self, query: dns.message.Message, rcode: int) -> Reply:
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.Rcode(rcode))
        return Reply([response.to_wire()])

    def _whole(self, query: dns.message.Message, version: Version) -> Iterator[bytes]:
        cache = WireCache(self.zone.settings.ttl)
        return self._stream(query, (), self.zone.wire(version, cache))

    def _stream(self, query: dns.message.Message, records: Iterable[Record],
                wire: Iterable[bytes] = ()) -> Iterator[bytes]:
        """The answer in messages of at most :data:`MESSAGE_LIMIT` bytes: packed here
        (an owner is its labels and a pointer to the question), then signed by dnspython
        when the query was."""
        q = query.question[0]
        question = bytes(q.name.to_wire() or b"") + struct.pack("!HH", q.rdtype, q.rdclass)
        flags = FLAG_QR | FLAG_AA | (query.flags & FLAG_RD)
        cache = WireCache(self.zone.settings.ttl)
        encoded = itertools.chain((cache.record(r) for r in records), wire)
        messages = _pack(query.id, flags, question, encoded)
        if not query.had_tsig:
            return messages
        return self._signed(query, messages)

    def _signed(self, query: dns.message.Message, messages: Iterator[bytes]
                ) -> Iterator[bytes]:
        assert self._keyring is not None and query.keyname is not None
        ctx = None
        for i, wire in enumerate(messages):
            # one RR per RRset: the closing SOA repeats the opening one and must stay
            m = dns.message.from_wire(wire, one_rr_per_rrset=True)
            m.use_tsig(self._keyring, query.keyname, algorithm=dns.tsig.HMAC_SHA256)
            if i == 0:
                m.request_mac = query.mac or b""
            out = m.to_wire(multi=True, tsig_ctx=ctx)
            ctx = m.tsig_ctx
            yield bytes(out)


def _incremental(version: Version, deltas: list[Delta]) -> Iterator[Record]:
    """RFC 1995 4: the current SOA, then per difference old SOA, deletions, new SOA,
    additions, and the current SOA again."""
    yield version.soa
    for d in deltas:
        yield d.old
        yield from d.removed
        yield d.new
        yield from d.added
    yield version.soa


def _pack(qid: int, flags: int, question: bytes, records: Iterable[bytes]
          ) -> Iterator[bytes]:
    """Records into messages, each with the question (the owners point into it)."""
    base = 12 + len(question)
    chunk: list[bytes] = []
    size = base
    for rr in records:
        if chunk and size + len(rr) > MESSAGE_LIMIT:
            yield struct.pack("!6H", qid, flags, 1, len(chunk), 0, 0) + question + \
                b"".join(chunk)
            chunk, size = [], base
        chunk.append(rr)
        size += len(rr)
    yield struct.pack("!6H", qid, flags, 1, len(chunk), 0, 0) + question + b"".join(chunk)


def _unchecked(_message: dns.message.Message, _name: dns.name.Name) -> bool:
    return False


def _parse_rcode(exc: Exception) -> int:
    """The rcode for a message that did not parse: TSIG problems are NOTAUTH (RFC 8945
    5.2), anything else FORMERR."""
    if isinstance(exc, (dns.tsig.BadSignature, dns.tsig.BadTime, dns.message.UnknownTSIGKey,
                        dns.tsig.PeerError, dns.tsig.BadAlgorithm)):
        return NOTAUTH
    return FORMERR


def _error_header(data: bytes, rcode: int) -> list[bytes]:
    """A bare reply (header only, no question) to bytes that did not parse; nothing
    for fewer than 12 bytes (no ID to answer to) or for a response."""
    if len(data) < 12 or data[2] & 0x80:
        return []
    qid, flags = struct.unpack("!HH", data[:4])
    opcode = flags & 0x7800
    return [struct.pack("!6H", qid, FLAG_QR | opcode | (flags & FLAG_RD) | rcode, 0, 0, 0, 0)]


# -- NOTIFY --------------------------------------------------------------------------


def notify_message(zone: Zone, qid: int, key: TsigKey | None = None
                   ) -> tuple[bytes, dns.message.Message]:
    """A NOTIFY (RFC 1996 3.7) for the zone with its current SOA in the answer; the
    message is kept to check the reply's TSIG against its MAC."""
    apex = dns.name.from_text(zone.settings.apex)
    m = dns.message.Message(qid)
    m.flags = dns.flags.AA  # the opcode lives in the flags word: set it after
    m.set_opcode(dns.opcode.NOTIFY)
    m.question = [dns.rrset.RRset(apex, dns.rdataclass.IN, dns.rdatatype.SOA)]
    soa = zone.current.soa
    m.answer = [dns.rrset.from_text(apex, zone.settings.ttl, "IN", "SOA", soa[2])]
    if key is not None:
        m.use_tsig(key.keyring(), key.name, algorithm=dns.tsig.HMAC_SHA256)
    return m.to_wire(), m


def notify_acknowledged(sent: dns.message.Message, data: bytes,
                        key: TsigKey | None = None) -> bool:
    """True if ``data`` is the secondary's NOERROR answer to ``sent``."""
    try:
        reply = dns.message.from_wire(
            data, keyring=key.keyring() if key is not None else None,
            request_mac=sent.mac if key is not None else b"")
    except Exception:  # anything unparsable or badly signed is no acknowledgement
        return False
    return bool(reply.id == sent.id and reply.flags & dns.flags.QR
                and reply.opcode() == dns.opcode.NOTIFY and reply.rcode() == dns.rcode.NOERROR)


__all__ = ["Primary", "Reply", "TsigKey", "Zone", "name_wire", "notify_acknowledged",
           "notify_message", "serial_after"]
