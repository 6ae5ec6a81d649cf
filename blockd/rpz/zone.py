"""The records of the policy zone: one code path for ``blockd export --format rpz`` (text)
and ``blockd serve rpz`` (wire).

An export entry (an order's target and its policy's action) becomes one or two owners
(``name`` and ``*.name`` for a whole domain, ``rpz-ip`` triggers for addresses) with the
policy records of its action. A name covered by several entries appears once, with the
first entry's action (entries sorted by target, then order reference), because RPZ allows
one policy per owner. All the owners of one index slot (:data:`~blockd.core.index.SlotKey`)
come from that slot alone, so the primary can build, compare and stream the zone a slot at
a time and get exactly the records the export writes.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from blockd.core.index import BlockIndex, SlotKey
from blockd.core.model import Action, DomainMatch, InputError, Target, TargetKind
from blockd.core.names import normalise_name

if TYPE_CHECKING:  # blockd.formats imports this module through formats/rpz.py
    from blockd.formats import ExportEntry

MAX_OWNER = 253
"""Longest owner name in text form without the final dot (255 octets on the wire)."""

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "TXT": 16, "AAAA": 28}
CLASS_IN = 1

Record = tuple[str, str, str]
"""(owner relative to the apex, "" for the apex; type; rdata in master-file text)."""


def rpz_ip_owner(target: Target) -> str:
    """``10.0.0.2`` -> ``32.2.0.0.10.rpz-ip``; ``2001:db8::/48`` -> ``48.zz.db8.2001.rpz-ip``.

    IPv6 is reversed by 16-bit groups as Python's compressed form writes them (lower case,
    no leading zeros, ``::`` for the longest zero run), with ``zz`` standing for ``::``.
    """
    net = ipaddress.ip_network(target.value)
    text = str(net.network_address)
    if net.version == 4:
        parts = text.split(".")
    elif "::" in text:
        head, tail = text.split("::")
        parts = [*(head.split(":") if head else []), "zz", *(tail.split(":") if tail else [])]
    else:
        parts = text.split(":")
    return ".".join([str(net.prefixlen), *reversed(parts), "rpz-ip"])


def owners(target: Target) -> list[str]:
    """The owners (relative to the apex) that trigger on ``target``."""
    if target.kind is not TargetKind.DOMAIN:
        return [rpz_ip_owner(target)]
    if target.match is DomainMatch.EXACT:
        return [target.value]
    if target.match is DomainMatch.WILDCARD:
        return ["*." + target.value]
    return [target.value, "*." + target.value]


def rdata(action: Action, target: Target, notice_ipv4: str | None,
          notice_ipv6: str | None) -> list[tuple[str, str]]:
    """The policy records (type, rdata) of one owner.

    An ``rpz-ip`` trigger only gets notice data of its own address family: Unbound refuses
    an A record under an IPv6 trigger ("record type does not correspond to netblock
    address family"), and an IPv6 trigger only ever matches AAAA answers anyway.
    """
    if action is Action.NODATA:
        return [("CNAME", "*.")]
    if action is Action.NOTICE:
        if target.kind is TargetKind.DOMAIN and notice_ipv4:
            return [("A", notice_ipv4)] + ([("AAAA", notice_ipv6)] if notice_ipv6 else [])
        v6 = target.kind is not TargetKind.DOMAIN and ":" in target.value
        if v6 and notice_ipv6:
            return [("AAAA", notice_ipv6)]
        if target.kind is not TargetKind.DOMAIN and not v6 and notice_ipv4:
            return [("A", notice_ipv4)]
    return [("CNAME", ".")]  # nxdomain, notice without an address; refused has no RPZ form


def unexportable(target: Target, apex: str) -> str | None:
    """Why a target cannot be an owner under ``apex`` (None if it can). One bad owner
    makes BIND and Unbound reject the whole zone, which would lift every block at once."""
    if target.kind is not TargetKind.DOMAIN:
        return None
    if target.value.rsplit(".", 1)[-1].startswith("rpz-"):
        return "RPZ reserves names ending in an rpz- label for its triggers"
    if len(target.value) + 2 + 1 + len(apex) > MAX_OWNER:  # "*." + name + "." + apex
        return f"too long to put under {apex}. (a DNS name has at most 255 octets)"
    return None


@dataclass(frozen=True, slots=True)
class ZoneSettings:
    """What the records depend on besides the entries: the apex (no final dot), the
    notice addresses and the TTL of every record."""

    apex: str = "rpz.blockd"
    notice_ipv4: str | None = None
    notice_ipv6: str | None = None
    ttl: int = 30
    contact: str = "hostmaster.invalid"

    @classmethod
    def checked(cls, origin: str, notice_ipv4: str | None, notice_ipv6: str | None,
                ttl: int, contact: str = "hostmaster.invalid.") -> ZoneSettings:
        """Validated settings; InputError naming the field otherwise."""
        apex = normalise_name(origin, "origin")
        contact = normalise_name(contact, "soa_contact")
        _check_address(notice_ipv4, 4, "notice_ipv4")
        _check_address(notice_ipv6, 6, "notice_ipv6")
        if not 0 <= ttl < 2**31:
            raise InputError("ttl", f"{ttl} is not a TTL (0 to 2147483647 seconds)")
        return cls(apex, notice_ipv4, notice_ipv6, ttl, contact)


def _check_address(value: str | None, version: int, field: str) -> None:
    if value is None:
        return
    try:
        ok = ipaddress.ip_address(value).version == version
    except ValueError:
        ok = False
    if not ok:
        raise InputError(field, f"{value!r} is not an IPv{version} address")


@dataclass(frozen=True, slots=True)
class OrderMark:
    """The entries that follow belong to this order (a comment in the export)."""

    reference: str
    authority: str


@dataclass(frozen=True, slots=True)
class Skipped:
    """A target RPZ cannot carry, left out of the zone (a warning in the export)."""

    spec: str
    problem: str


Item = Record | OrderMark | Skipped


def policy_records(entries: Iterable[ExportEntry], settings: ZoneSettings,
                   seen: set[str] | None = None) -> Iterator[Item]:
    """The records of ``entries`` (sorted by target, then reference), first owner wins;
    ``seen`` carries the owners already written across calls."""
    seen = set() if seen is None else seen
    last: tuple[str, str] | None = None
    for e in entries:
        names = [o for o in owners(e.target) if o not in seen]
        if not names:
            continue
        order = (e.reference, e.authority)
        if order != last:
            yield OrderMark(*order)
            last = order
        problem = unexportable(e.target, settings.apex)
        if problem:
            yield Skipped(e.target.spec, problem)
            continue
        records = rdata(e.action, e.target, settings.notice_ipv4, settings.notice_ipv6)
        for owner in names:
            seen.add(owner)
            for rtype, data in records:
                yield (owner, rtype, data)


def slot_entries(index: BlockIndex, key: SlotKey) -> list[ExportEntry]:
    """The export entries of one index slot, in the export's order."""
    from blockd.formats import ExportEntry

    return sorted((ExportEntry(t, index.action_for(o), o.reference, o.authority)
                   for o, t in index.entries_at(key)),
                  key=lambda e: (e.target, e.reference))


def slot_records(index: BlockIndex, key: SlotKey, settings: ZoneSettings) -> list[Record]:
    """The records of one slot: what the export writes for its targets."""
    return [item for item in policy_records(slot_entries(index, key), settings)
            if isinstance(item, tuple)]


def anchor_text(seq: int, head_hash: str | None) -> str:
    """The journal head as ``blockd audit anchor`` prints it (``SEQ:HASH``):
    ``blockd audit verify --anchor`` takes the TXT string as it is."""
    return f"{seq}:{head_hash or ''}"


def apex_records(settings: ZoneSettings, serial: int, seq: int,
                 head_hash: str | None) -> list[Record]:
    """SOA, NS ``localhost.`` and the TXT with the journal head, at the apex.

    The serial is taken modulo 2**32 (RFC 1982 serial arithmetic treats the wrap as an
    increase). The SOA minimum is the TTL, so negative answers expire as fast as blocks.
    """
    ttl = settings.ttl
    return [
        ("", "SOA", f"localhost. {settings.contact}. {serial % 2**32} 3600 600 86400 {ttl}"),
        ("", "NS", "localhost."),
        ("", "TXT", f'"{anchor_text(seq, head_hash)}"'),
    ]


# -- wire ----------------------------------------------------------------------------

APEX_POINTER = b"\xc0\x0c"
"""A compression pointer to the question's name (offset 12): the apex in every answer
the primary sends, so an owner is its relative labels and two bytes."""


def name_wire(name: str) -> bytes:
    """An absolute name (``a.b`` or ``a.b.``; ``.`` or ``""`` is the root) uncompressed."""
    out = bytearray()
    for label in name.rstrip(".").split(".") if name.strip(".") else []:
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad label {label!r}")
        out += bytes((len(raw),)) + raw
    out += b"\x00"
    if len(out) > 255:
        raise ValueError("name longer than 255 octets")
    return bytes(out)


def owner_wire(owner: str) -> bytes:
    """A relative owner as labels followed by the pointer to the apex."""
    if not owner:
        return APEX_POINTER
    return name_wire(owner)[:-1] + APEX_POINTER


def rdata_wire(rtype: str, text: str) -> bytes:
    """The rdata of the record types the zone holds (text as :func:`apex_records` and
    :func:`rdata` write it)."""
    if rtype == "A":
        return socket.inet_pton(socket.AF_INET, text)
    if rtype == "AAAA":
        return socket.inet_pton(socket.AF_INET6, text)
    if rtype in ("CNAME", "NS"):
        return name_wire(text)
    if rtype == "TXT":
        raw = text.strip('"').encode("ascii")
        return b"".join(bytes((len(raw[i:i + 255]),)) + raw[i:i + 255]
                        for i in range(0, max(len(raw), 1), 255))
    if rtype == "SOA":
        mname, rname, *numbers = text.split()
        return name_wire(mname) + name_wire(rname) + struct.pack("!5I", *map(int, numbers))
    raise ValueError(f"no wire form for {rtype}")


class WireCache:
    """Records to wire bytes; the few distinct rdata (CNAME ., the notice address) are
    encoded once, so a million records cost a dict lookup and a join each."""

    def __init__(self, ttl: int) -> None:
        self.ttl = ttl
        self._tails: dict[tuple[str, str], bytes] = {}

    def record(self, rec: Record) -> bytes:
        owner, rtype, text = rec
        tail = self._tails.get((rtype, text))
        if tail is None:
            data = rdata_wire(rtype, text)
            tail = self._tails[(rtype, text)] = struct.pack(
                "!HHIH", TYPES[rtype], CLASS_IN, self.ttl, len(data)) + data
            if len(self._tails) > 1024:  # SOA and TXT change with every version
                self._tails.clear()
        return owner_wire(owner) + tail


_PLACEHOLDER = "placeholder.invalid"


class SlotWire:
    """The wire records of a whole index, fast: a domain slot held by one order (nearly
    all of them) is its name's labels in front of a template, and the template of each
    (order, match mode) is what :func:`policy_records` yields for a placeholder name, so
    the records are the shared path's. Every other slot (several orders on one name,
    addresses, names RPZ cannot carry) goes through :func:`slot_records` itself."""

    def __init__(self, index: BlockIndex, settings: ZoneSettings) -> None:
        self.index = index
        self.settings = settings
        self.cache = WireCache(settings.ttl)
        self._templates: dict[int, list[tuple[bytes, bytes]] | None] = {}

    def _template_for(self, name: str, codes: object, limit: int
                      ) -> list[tuple[bytes, bytes]] | None:
        """The wire template of a name's slot (one order, a name short enough, not an
        ``rpz-`` trigger), built once per order code; None: the record-by-record path."""
        if not (isinstance(codes, int) and len(name) <= limit and "rpz-" not in name):
            return None
        templates = self._templates
        if codes in templates:
            return templates[codes]
        template = templates[codes] = self._template(codes)
        return template

    def _template(self, code: int) -> list[tuple[bytes, bytes]] | None:
        from blockd.formats import ExportEntry

        order, match = self.index.code_entry(code)
        entry = ExportEntry(Target(TargetKind.DOMAIN, _PLACEHOLDER, match),
                            self.index.action_for(order), order.reference, order.authority)
        out = []
        for item in policy_records([entry], self.settings):
            if not isinstance(item, tuple):
                continue
            owner, rtype, text = item
            prefix = {_PLACEHOLDER: b"", "*." + _PLACEHOLDER: b"\x01*"}.get(owner)
            if prefix is None:
                return None
            tail = self.cache.record(("", rtype, text))[len(APEX_POINTER):]
            out.append((prefix, tail))
        return out

    def records(self) -> Iterator[bytes]:
        """Every policy record of the index (no apex records), as wire bytes."""
        index, settings = self.index, self.settings
        limit = MAX_OWNER - 3 - len(settings.apex)
        pointer = APEX_POINTER
        for name, codes in index.name_slots():
            template = self._template_for(name, codes, limit)
            if template is None:  # the shared path, record by record
                yield from self._slow(name)
                continue
            labels = name.encode("ascii").split(b".")
            if max(map(len, labels)) > 63:
                continue  # never normalised into the index; never a broken zone either
            wire = b"".join([bytes((len(label),)) + label for label in labels]) + pointer
            for prefix, tail in template:
                yield prefix + wire + tail
        for key in index.net_slots():
            yield from self._slow(key)

    def count(self) -> int:
        """How many records :meth:`records` yields, without building them (the same
        walk: a templated slot counts its template's records)."""
        index = self.index
        limit = MAX_OWNER - 3 - len(self.settings.apex)
        total = 0
        for name, codes in index.name_slots():
            template = self._template_for(name, codes, limit)
            if template is None:
                total += sum(1 for _ in self._slow(name))
            elif len(name) <= 63 or max(map(len, name.split("."))) <= 63:
                total += len(template)
        for key in index.net_slots():
            total += sum(1 for _ in self._slow(key))
        return total

    def _slow(self, key: SlotKey) -> Iterator[bytes]:
        for rec in slot_records(self.index, key, self.settings):
            try:
                yield self.cache.record(rec)
            except (ValueError, UnicodeError):  # a name the wire cannot carry: left out
                continue
