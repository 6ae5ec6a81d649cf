"""RPZ zones (draft-vixie-dnsop-dns-rpz): what BIND, Unbound, PowerDNS and Knot load.

Export: the records of :mod:`blockd.rpz.zone` (the same code path ``blockd serve rpz``
serves from) as a master file. The exported SOA serial is the journal sequence number.

Import: a small tokenizer and line parser rather than dnslib's zone reader. RPZ files use
a narrow part of the master-file syntax (RFC 1035 section 5), and the parser must reject
hostile input with a line number, whereas dnslib raises assorted non-DNSError exceptions
(pitfalls.md), does not report lines, and would follow ``$INCLUDE`` to read other files.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from blockd.core.model import DomainMatch, Target, TargetKind
from blockd.formats import ExportEntry, FormatError, lines, quote, target_at
from blockd.rpz import zone as rz

# -- export ---------------------------------------------------------------------------

MAX_OWNER = rz.MAX_OWNER
rpz_ip_owner = rz.rpz_ip_owner  # kept here for the importers' and tests' sake


def _comment(text: str) -> str:
    """Free text (order references, authorities) made safe for one comment line."""
    return "".join(c if c.isprintable() else " " for c in text)


def render(entries: Iterable[ExportEntry], *, origin: str = "rpz.blockd.", serial: int,
           notice_ipv4: str | None, notice_ipv6: str | None, ttl: int = 30,
           soa_contact: str = "hostmaster.invalid.", seq: int | None = None,
           head_hash: str | None = None, **_: object) -> str:
    """A complete policy zone: SOA, NS ``localhost.``, the journal head as a TXT record,
    then one owner per trigger (:func:`blockd.rpz.zone.policy_records`, the records
    ``blockd serve rpz`` serves).

    ``notice`` is the notice server's A (and AAAA) record, or NXDOMAIN when no notice
    address is configured. ``seq`` (default: the serial) and ``head_hash`` name the
    journal head the zone was made from.

    A name RPZ cannot carry is left out with a ``; NOT EXPORTED`` comment instead of
    breaking the zone: one bad owner makes BIND and Unbound reject the whole file, which
    would lift every block at once.
    """
    settings = rz.ZoneSettings.checked(origin, notice_ipv4, notice_ipv6, ttl, soa_contact)
    out = [
        "; blockd response policy zone: the targets of the orders in force.",
        "; Actions: notice -> A/AAAA of the notice server (NXDOMAIN when it has no address);",
        "; nxdomain -> CNAME .; nodata -> CNAME *.;",
        "; refused -> CNAME . (RPZ has no REFUSED action, so it is exported as NXDOMAIN).",
        f"$ORIGIN {settings.apex}.",
        f"$TTL {ttl}",
    ]
    head = rz.apex_records(settings, serial, serial if seq is None else seq, head_hash)
    for owner, rtype, data in head:
        if rtype == "SOA":  # the numbers in parentheses, as zone files usually have them
            mname, rname, numbers = data.split(" ", 2)
            data = f"{mname} {rname} ( {numbers} )"
        out.append(f"{owner or '@'} {rtype} {data}")
    for item in rz.policy_records(entries, settings):
        if isinstance(item, rz.OrderMark):
            out.append(f"; order {_comment(item.reference)} ({_comment(item.authority)})")
        elif isinstance(item, rz.Skipped):
            out.append(f"; NOT EXPORTED: {_comment(item.spec)}: {item.problem}")
        else:
            out.append(f"{item[0]} {item[1]} {item[2]}")
    return "\n".join(out) + "\n"


# -- import ---------------------------------------------------------------------------

DNSSEC_TYPES = frozenset({"RRSIG", "NSEC", "NSEC3", "NSEC3PARAM", "DNSKEY", "DS", "ZONEMD"})
"""Signatures and proofs of a signed policy zone: never a policy of their own."""
DATA_TYPES = frozenset({
    "A", "AAAA", "CNAME", "TXT", "MX", "PTR", "SRV", "NAPTR", "HINFO", "CAA", "SSHFP",
    "TLSA", "SVCB", "HTTPS", "DNAME", "LOC", "URI",
})
"""Local-data types: any of them at a trigger rewrites the answer, i.e. blocks."""
NOT_BLOCKS = frozenset({"rpz-passthru", "rpz-tcp-only"})
"""CNAME actions that let the query through: an exemption, and a push to TCP."""
UNSUPPORTED = ("rpz-nsdname", "rpz-nsip", "rpz-client-ip")
_TTL = re.compile(r"[0-9]+|([0-9]+[smhdw])+", re.IGNORECASE)
_PLEN = re.compile(r"[0-9]{1,3}")
_SPECIAL = re.compile(r'[";()\\]')
_WORD = re.compile(r"[^ \t]+")
_IPV6_GROUP = re.compile(r"[0-9a-f]{1,4}|zz")


@dataclass(frozen=True, slots=True)
class _Name:
    """A resolved domain name; ``absolute`` False means relative to the unknown zone name.

    Zone files often have no ``$ORIGIN`` (the server's configuration supplies the zone
    name), so relative names are kept relative until the apex is known.
    """

    text: str  # lower case, no final dot; "" is the root (absolute) or the apex (relative)
    absolute: bool

    def under(self, apex: _Name) -> str | None:
        """This name relative to ``apex`` ("" for the apex itself), None if outside it."""
        if self.absolute != apex.absolute:
            return None
        if not apex.text:
            return self.text
        if self.text == apex.text:
            return ""
        if self.text.endswith("." + apex.text):
            return self.text[: -len(apex.text) - 1]
        return None

    def __str__(self) -> str:
        if self.absolute:
            return self.text + "."
        return self.text or "@"


@dataclass(frozen=True, slots=True)
class _Line:
    """One logical line: tokens with parentheses joined, and whether it had an owner."""

    number: int
    tokens: list[str]
    blank_owner: bool


def _tokens(text: str) -> Iterator[_Line]:
    """Split the file into logical lines (RFC 1035 5.1: quotes, ``;``, ``( )``, ``\\``)."""
    depth = 0
    start = 0
    tokens: list[str] = []
    blank_owner = False
    for number, raw in enumerate(lines(text), 1):
        if depth == 0:
            start, tokens, blank_owner = number, [], raw[:1] in (" ", "\t")
        if not _SPECIAL.search(raw):  # fast path: most lines are plain "owner TYPE data"
            tokens.extend(_WORD.findall(raw))
            if depth == 0 and tokens:
                yield _Line(start, tokens, blank_owner)
            continue
        current: list[str] | None = None  # the token being read; None between tokens
        quoted = False
        i = 0
        while i < len(raw):
            c = raw[i]
            i += 1
            if c == "\\" and i < len(raw):
                current = current if current is not None else []
                current += (c, raw[i])
                i += 1
            elif quoted or c not in " \t;()":
                current = current if current is not None else []
                current.append(c)
                quoted = quoted != (c == '"')
            else:
                if current is not None:
                    tokens.append("".join(current))
                    current = None
                if c == ";":
                    break
                depth += {"(": 1, ")": -1}.get(c, 0)
                if depth < 0:
                    raise FormatError(number, f"unbalanced ')' in {quote(raw)}")
        if quoted:
            raise FormatError(number, f"unterminated quoted string in {quote(raw)}")
        if current is not None:
            tokens.append("".join(current))
        if depth == 0 and tokens:
            yield _Line(start, tokens, blank_owner)
    if depth:
        raise FormatError(start, "unbalanced '(' (never closed)")


def _name(token: str, origin: _Name, number: int) -> _Name:
    """Resolve an owner or CNAME target against the current origin."""
    if token == "@":
        return origin
    if token == ".":
        return _Name("", True)
    if ".." in token or token.startswith("."):
        raise FormatError(number, f"name {quote(token)} has an empty label")
    if token.endswith("."):
        return _Name(token[:-1].lower(), True)
    return _Name(_join(token.lower(), origin.text), origin.absolute)


def _join(relative: str, origin: str) -> str:
    return ".".join(part for part in (relative, origin) if part)


def _ip_trigger(trigger: str, number: int) -> Target:
    """``24.0.2.0.192`` (the part before ``.rpz-ip``) -> the prefix 192.0.2.0/24."""
    labels = trigger.split(".")
    bad = f"bad rpz-ip trigger {quote(trigger + '.rpz-ip')}"
    if len(labels) < 2 or not _PLEN.fullmatch(labels[0]):
        raise FormatError(number, f"{bad}: expected <prefix length>.<reversed address>")
    plen, parts = int(labels[0]), labels[:0:-1]
    if not all(_IPV6_GROUP.fullmatch(p) for p in parts):
        raise FormatError(number, f"{bad}: labels are decimal octets or hex groups")
    if "zz" in parts:
        i = parts.index("zz")
        text = ":".join(parts[:i]) + "::" + ":".join(parts[i + 1 :])
    elif len(parts) == 8:
        text = ":".join(parts)
    elif len(parts) == 4:
        text = ".".join(parts)
    else:
        raise FormatError(number, f"{bad}: an address has 4 (IPv4) or 8 (IPv6) labels")
    try:
        net = ipaddress.ip_network(f"{text}/{plen}")
    except ValueError as exc:
        raise FormatError(number, f"{bad}: {exc}") from None
    return target_at(number, str(net))


@dataclass
class _Zone:
    """What the parser has learnt so far, filled line by line."""

    origin: _Name
    apex: _Name | None = None
    previous: _Name | None = None
    soa_seen: bool = False


def parse(text: str) -> list[Target]:
    """Block triggers of an RPZ zone as targets, in file order, duplicates dropped.

    ``name`` alone is ``=name``, ``*.name`` alone ``*.name``, both together ``name``;
    ``rpz-ip`` triggers are addresses or prefixes. Every action except passthru (an
    exemption) and tcp-only (no denial) counts as blocked. The apex is the owner of a
    leading SOA, else the origin in force at the first record; owners outside it,
    unknown directives (``$INCLUDE`` would read other files) and triggers blockd cannot
    enforce (nsdname, nsip, client-ip) are errors.
    """
    zone = _Zone(origin=_Name("", False))
    matches: dict[str, set[DomainMatch]] = {}  # domain -> how its owners cover it
    found: dict[Target | str, None] = {}  # file order: addresses, and domains by name
    for line in _tokens(text):
        owner = _record(line, zone)
        if owner is None:
            continue
        if owner == "rpz-ip" or owner.endswith(".rpz-ip"):
            found.setdefault(_ip_trigger(owner.removesuffix("rpz-ip")[:-1], line.number))
            continue
        # ``name`` alone blocks the name only, ``*.name`` its subdomains only
        target = target_at(line.number, owner if owner.startswith("*.") else "=" + owner)
        matches.setdefault(target.value, set()).add(target.match)
        found.setdefault(target.value)
    out: list[Target] = []
    for key in found:
        if isinstance(key, Target):
            out.append(key)
        else:
            both = len(matches[key]) > 1  # ``name`` and ``*.name``: the whole subtree
            match = DomainMatch.SUBTREE if both else next(iter(matches[key]))
            out.append(Target(TargetKind.DOMAIN, key, match))
    return out


def _record(line: _Line, zone: _Zone) -> str | None:
    """Interpret one logical line; returns the owner (relative to the apex) of a block."""
    number, tokens = line.number, list(line.tokens)
    head = tokens[0].upper()
    if head == "$ORIGIN":
        if len(tokens) != 2:
            raise FormatError(number, "$ORIGIN needs exactly one name")
        zone.origin = _name(tokens[1], zone.origin, number)
        return None
    if head == "$TTL":
        if len(tokens) != 2 or not _TTL.fullmatch(tokens[1]):
            raise FormatError(number, f"$TTL needs one TTL, not {quote(' '.join(tokens[1:]))}")
        return None
    if head.startswith("$"):
        raise FormatError(number, f"unsupported directive {quote(tokens[0])}")
    if line.blank_owner:
        if zone.previous is None:
            raise FormatError(number, "record without an owner name")
        name = zone.previous
    else:
        name = _name(tokens.pop(0), zone.origin, number)
        zone.previous = name
    rtype, rdata = _type_and_data(tokens, number)
    if zone.apex is None:
        zone.apex = name if rtype == "SOA" else zone.origin
        if zone.apex.absolute and not zone.origin.absolute:
            # an absolute SOA owner names the zone: the origin relative names lacked
            zone.origin = _Name(_join(zone.origin.text, zone.apex.text), True)
    owner = name.under(zone.apex)
    if owner is None:
        raise FormatError(number, f"owner {quote(str(name))} is outside the zone "
                                  f"{quote(str(zone.apex))}")
    if rtype in DNSSEC_TYPES:
        return None
    if rtype in ("SOA", "NS"):
        if owner:
            raise FormatError(number, f"{rtype} below the zone apex ({quote(owner)}) is not "
                                      "a policy record")
        if rtype == "SOA":
            if zone.soa_seen:
                raise FormatError(number, "a second SOA record")
            zone.soa_seen = True
        return None
    if not owner and rtype == "TXT":  # the journal head blockd publishes at the apex
        return None
    if not owner:
        raise FormatError(number, f"a policy record ({rtype}) at the zone apex")
    if owner == "*":
        raise FormatError(number, "a wildcard at the zone apex (it would block every name)")
    if rtype == "CNAME":
        cname = _name(rdata[0], zone.origin, number).under(_Name("", True))
        if cname in NOT_BLOCKS or cname == owner:  # ``name CNAME name.``: old passthru
            return None
    last = owner.rsplit(".", 1)[-1]
    if last in UNSUPPORTED:
        raise FormatError(number, f"unsupported trigger {quote(owner)}: blockd enforces "
                                  "QNAME and rpz-ip triggers only")
    if last.startswith("rpz-") and last != "rpz-ip":
        raise FormatError(number, f"unknown trigger {quote(owner)}")
    return owner


def _type_and_data(tokens: list[str], number: int) -> tuple[str, list[str]]:
    """Skip the optional TTL and class (either order); check the type and its data."""
    seen_ttl = seen_class = False
    while tokens:
        word = tokens[0].upper()
        if not seen_ttl and _TTL.fullmatch(word):
            seen_ttl = True
        elif not seen_class and word in ("IN", "CH", "HS", "CS"):
            seen_class = True
        else:
            break
        tokens.pop(0)
    if not tokens:
        raise FormatError(number, "record without a type")
    rtype, rdata = tokens[0].upper(), tokens[1:]
    if rtype not in DATA_TYPES | DNSSEC_TYPES | {"SOA", "NS"}:
        raise FormatError(number, f"unknown record type {quote(tokens[0])}")
    if not rdata:
        raise FormatError(number, f"{rtype} record without data")
    expected = {"CNAME": 1, "A": 1, "AAAA": 1, "NS": 1, "SOA": 7}.get(rtype)
    if expected is not None and len(rdata) != expected:
        raise FormatError(number, f"{rtype} needs {expected} field(s), got "
                                  f"{quote(' '.join(rdata))}")
    if rtype in ("A", "AAAA"):
        try:
            ok = ipaddress.ip_address(rdata[0]).version == (4 if rtype == "A" else 6)
        except ValueError:
            ok = False
        if not ok:
            raise FormatError(number, f"{rtype} data {quote(rdata[0])} is not an "
                                      f"IPv{4 if rtype == 'A' else 6} address")
    return rtype, rdata
