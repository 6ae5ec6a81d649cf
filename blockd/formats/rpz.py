"""RPZ zones (draft-vixie-dnsop-dns-rpz): what BIND, Unbound, PowerDNS and Knot load.

Export: a whole domain is two owners (``name`` and ``*.name``), an exact name one, a
wildcard target only ``*.name``; addresses become ``rpz-ip`` triggers. The SOA serial is
the journal sequence number, so it grows with every change (IXFR will send the
difference between two serials).

Import: a small line parser rather than dnslib's zone reader. RPZ files use a narrow
part of the zone syntax, and the parser must reject hostile input with a line number
instead of the assorted exceptions dnslib raises (see pitfalls.md).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator

from blockd.core.model import Action, DomainMatch, InputError, Target, TargetKind
from blockd.core.names import parse_target
from blockd.formats import ExportEntry, FormatError

TYPES = {"A", "AAAA", "CNAME", "TXT", "SOA", "NS", "MX", "PTR", "SRV", "HINFO", "DNAME"}
CLASSES = {"IN", "CH", "HS"}
UNSUPPORTED = ("rpz-nsdname", "rpz-client-ip", "rpz-nsip")


# -- export ---------------------------------------------------------------------------


def rpz_ip_owner(target: Target) -> str:
    """``10.0.0.2`` -> ``32.2.0.0.10.rpz-ip``; ``2001:db8::/48`` -> ``48.zz.db8.2001.rpz-ip``."""
    net = ipaddress.ip_network(target.value)
    if net.version == 4:
        parts = str(net.network_address).split(".")
    else:
        text = str(net.network_address)
        if "::" in text:
            head, tail = text.split("::")
            parts = (head.split(":") if head else []) + ["zz"] + (tail.split(":") if tail else [])
        else:
            parts = text.split(":")
    return ".".join([str(net.prefixlen), *reversed(parts), "rpz-ip"])


def _owners(target: Target) -> list[str]:
    if target.kind is not TargetKind.DOMAIN:
        return [rpz_ip_owner(target)]
    if target.match is DomainMatch.EXACT:
        return [target.value]
    if target.match is DomainMatch.WILDCARD:
        return ["*." + target.value]
    return [target.value, "*." + target.value]


def _rdata(action: Action, notice_ipv4: str | None, notice_ipv6: str | None) -> list[str]:
    if action is Action.NODATA:
        return ["CNAME *."]
    if action is Action.NOTICE and notice_ipv4:
        return [f"A {notice_ipv4}"] + ([f"AAAA {notice_ipv6}"] if notice_ipv6 else [])
    return ["CNAME ."]  # nxdomain; refused has no RPZ form (see the zone header)


def render(entries: Iterable[ExportEntry], *, origin: str = "rpz.blockd.", serial: int = 0,
           notice_ipv4: str | None = None, notice_ipv6: str | None = None, ttl: int = 30,
           soa_contact: str = "hostmaster.invalid.", **_: object) -> str:
    origin = origin if origin.endswith(".") else origin + "."
    lines = [
        "; blockd response policy zone: orders in force, generated from the journal.",
        "; Actions: notice -> A/AAAA of the notice server; nxdomain -> CNAME .;",
        "; nodata -> CNAME *.; refused has no RPZ form and is exported as NXDOMAIN.",
        f"$ORIGIN {origin}",
        f"$TTL {ttl}",
        f"@ SOA localhost. {soa_contact} ( {serial % 2**32} 3600 600 86400 {ttl} )",
        "@ NS localhost.",
    ]
    seen: set[str] = set()
    last_ref = None
    for e in entries:
        owners = [o for o in _owners(e.target) if o not in seen]
        if not owners:
            continue
        if e.reference != last_ref:
            lines.append(f"; order {e.reference} ({e.authority})".replace("\n", " "))
            last_ref = e.reference
        for owner in owners:
            seen.add(owner)
            for rdata in _rdata(e.action, notice_ipv4, notice_ipv6):
                lines.append(f"{owner} {rdata}")
    return "\n".join(lines) + "\n"


# -- import ---------------------------------------------------------------------------


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Yield (first line number, text) with comments removed and parentheses joined."""
    buffer: list[str] = []
    start = 0
    depth = 0
    for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), 1):
        line = re.sub(r";.*$", "", raw)
        if not buffer:
            start = number
        depth += line.count("(") - line.count(")")
        if depth < 0:
            raise FormatError(number, "unbalanced ')'")
        buffer.append(line.replace("(", " ").replace(")", " "))
        if depth == 0:
            joined = buffer[0][:1] + " ".join(buffer)[1:] if buffer[0] else ""
            buffer = []
            if joined.strip():
                yield start, joined
    if depth:
        raise FormatError(start, "unbalanced '(' (never closed)")


def _relative(owner: str, origin: str, number: int) -> str:
    owner = owner.lower()
    if owner == "@":
        return ""
    if owner.endswith("."):
        if owner == origin:
            return ""
        if not owner.endswith("." + origin):
            raise FormatError(number, f"owner {owner!r} is outside the zone {origin!r}")
        return owner[: -len(origin) - 1]
    return owner


def _ip_trigger(owner: str, number: int) -> Target:
    labels = owner.split(".")[:-1]  # drop rpz-ip
    if len(labels) < 2 or not labels[0].isdigit():
        raise FormatError(number, f"bad rpz-ip trigger {owner!r}")
    plen, parts = int(labels[0]), list(reversed(labels[1:]))
    if "zz" in parts:
        i = parts.index("zz")
        text = ":".join(parts[:i]) + "::" + ":".join(parts[i + 1 :])
    else:
        text = (":" if len(parts) == 8 else ".").join(parts)
    try:
        target = parse_target(f"{text}/{plen}")
    except InputError as exc:
        raise FormatError(number, f"bad rpz-ip trigger {owner!r}: {exc.reason}") from None
    return target


def parse(text: str) -> list[Target]:
    origin = "."
    owners: dict[str, int] = {}
    addresses: dict[Target, None] = {}
    previous: str | None = None
    for number, line in _logical_lines(text):
        tokens = line.split()
        if tokens[0].upper() == "$ORIGIN":
            if len(tokens) != 2:
                raise FormatError(number, "$ORIGIN needs one name")
            origin = tokens[1].lower() if tokens[1].endswith(".") else tokens[1].lower() + "."
            continue
        if tokens[0].upper() == "$TTL":
            continue
        if tokens[0].startswith("$"):
            raise FormatError(number, f"unsupported directive {tokens[0]}")
        if line[0] in " \t":
            if previous is None:
                raise FormatError(number, "record without an owner name")
            owner = previous
        else:
            owner = _relative(tokens.pop(0), origin, number)
            previous = owner
        while tokens and (tokens[0].isdigit() or tokens[0].upper() in CLASSES):
            tokens.pop(0)
        if not tokens or tokens[0].upper() not in TYPES:
            raise FormatError(number, f"no record type in {line.strip()!r}")
        rtype, rdata = tokens[0].upper(), tokens[1:]
        if rtype in ("SOA", "NS"):
            continue
        if not rdata:
            raise FormatError(number, f"{rtype} record without data")
        if rtype == "CNAME" and rdata[0].lower() == "rpz-passthru.":
            continue  # an exemption, not a block
        if any(owner.endswith("." + t) or owner == t for t in UNSUPPORTED):
            raise FormatError(number, f"unsupported trigger {owner!r}")
        if owner.endswith(".rpz-ip"):
            addresses[_ip_trigger(owner, number)] = None
            continue
        if not owner:
            raise FormatError(number, "a policy record at the zone apex")
        owners.setdefault(owner, number)
    out: dict[Target, None] = {}
    for owner, number in owners.items():
        wildcard = owner.startswith("*.")
        base = owner[2:] if wildcard else owner
        if wildcard and base in owners:
            continue  # covered by the subtree target emitted for ``base``
        if wildcard:
            spec = owner
        elif "*." + base in owners:
            spec = base
        else:
            spec = "=" + base
        try:
            out[parse_target(spec)] = None
        except InputError as exc:
            raise FormatError(number, exc.reason) from None
    out.update(addresses)
    return list(out)
