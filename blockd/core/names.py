"""Parse and normalise what an order may name: domains (IDN to punycode), IPs and prefixes.

Every path into the store goes through :func:`parse_target`, so the policy core only ever
sees canonical values and two spellings of one name can never become two targets.
"""

from __future__ import annotations

import ipaddress
import re

import idna

from blockd.core.model import DomainMatch, InputError, Target, TargetKind

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_IPV4_SPEC = re.compile(r"^[0-9.]+(/[0-9]+)?$")
MAX_NAME = 253


def normalise_name(text: str, field: str = "target") -> str:
    """Return the lower-case punycode form of a host name, or raise InputError.

    Accepts Unicode (IDN) names and a trailing dot; rejects empty labels, labels over 63
    bytes, names over 253 bytes, and characters that cannot appear in a host name.
    """
    name = text.strip()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise InputError(field, "empty name")
    if "://" in name or "/" in name:
        raise InputError(field, f"{text!r} looks like a URL; give the host name only")
    if not name.isascii():
        try:
            name = idna.encode(name, uts46=True, transitional=False).decode("ascii")
        except idna.IDNAError as exc:
            raise InputError(
                field, f"{text!r} is not a valid internationalised name ({exc})") from None
        except UnicodeError as exc:
            raise InputError(field, f"{text!r} is not a valid name ({exc})") from None
    name = name.lower()
    if len(name) > MAX_NAME:
        raise InputError(field, f"{text!r} is longer than {MAX_NAME} characters")
    if name.rsplit(".", 1)[-1].isdigit():
        raise InputError(field, f"{text!r} is not a valid host name (numeric top-level label)")
    for label in name.split("."):
        if not label:
            raise InputError(field, f"{text!r} has an empty label")
        if len(label) > 63:
            raise InputError(field, f"{text!r} has a label longer than 63 characters")
        if not _LABEL.match(label):
            raise InputError(field, f"{text!r} is not a valid host name")
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError):
                raise InputError(field, f"{text!r} has an invalid punycode label") from None
    return name


def parse_address(text: str, field: str = "target") -> Target | None:
    """Parse an IP address or prefix; None when the text is not address-shaped at all."""
    raw = text.strip()
    if "/" in raw:
        try:
            net = ipaddress.ip_network(raw, strict=False)
        except ValueError:
            head = raw.split("/", 1)[0]
            if _looks_like_ip(head):
                raise InputError(field, f"{text!r} is not a valid IP prefix") from None
            return None
        if net.prefixlen == net.max_prefixlen:
            return Target(TargetKind.IP, str(net.network_address))
        return Target(TargetKind.PREFIX, str(net))
    try:
        addr = ipaddress.ip_address(raw)
    except ValueError:
        if _looks_like_ip(raw):
            raise InputError(field, f"{text!r} is not a valid IP address") from None
        return None
    return Target(TargetKind.IP, str(addr))


def _looks_like_ip(text: str) -> bool:
    return bool(re.fullmatch(r"[0-9.]+", text)) or ":" in text


def parse_target(text: str, field: str = "target") -> Target:
    """Parse one target as users write it.

    ``example.com`` covers the name and its subdomains, ``=example.com`` only the name,
    ``*.example.com`` only its subdomains; addresses and prefixes are IPv4 or IPv6.
    """
    raw = text.strip()
    if not raw:
        raise InputError(field, "empty target")
    if "://" in raw:
        raise InputError(field, f"{text!r} looks like a URL; give the host name only")
    address = parse_address(raw, field)
    if address is not None:
        return address
    match = DomainMatch.SUBTREE
    if raw.startswith("="):
        match, raw = DomainMatch.EXACT, raw[1:]
    elif raw.startswith("*."):
        match, raw = DomainMatch.WILDCARD, raw[2:]
    if "*" in raw:
        raise InputError(field, f"{text!r}: a wildcard is only allowed as a leading '*.'")
    return Target(TargetKind.DOMAIN, normalise_name(raw, field), match)


def target_from_spec(spec: str) -> Target:
    """Rebuild a target from its canonical spec (journal payloads), without re-validating.

    Only for text blockd wrote itself; user input goes through :func:`parse_target`.
    """
    if spec.startswith("="):
        return Target(TargetKind.DOMAIN, spec[1:], DomainMatch.EXACT)
    if spec.startswith("*."):
        return Target(TargetKind.DOMAIN, spec[2:], DomainMatch.WILDCARD)
    if ":" in spec or _IPV4_SPEC.match(spec):
        kind = TargetKind.PREFIX if "/" in spec else TargetKind.IP
        return Target(kind, spec)
    return Target(TargetKind.DOMAIN, spec)


_KINDS = {k.value: k for k in TargetKind}
_MATCHES = {m.value: m for m in DomainMatch}


def target_from_parts(kind: str, value: str, match: str) -> Target:
    """Rebuild a target from stored columns (already canonical; a hot path at load)."""
    return Target(_KINDS[kind], value, _MATCHES[match])


def name_suffixes(name: str) -> list[str]:
    """``a.b.c`` -> ``["a.b.c", "b.c", "c"]``: the keys a name lookup probes."""
    out = [name]
    i = name.find(".")
    while i != -1:
        out.append(name[i + 1 :])
        i = name.find(".", i + 1)
    return out
