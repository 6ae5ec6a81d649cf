"""Address lists that CDN and cloud providers publish, read into protected networks.

The appliance has no network access of its own: an operator downloads the lists (AWS
``ip-ranges.json``, Google ``goog.json``/``cloud.json``, Fastly ``public-ip-list``, Azure
Service Tags JSON, Cloudflare's ``ips-v4``/``ips-v6`` text, or any text file with one
prefix a line) and ``blockd guard update`` turns them into ``protected-providers.txt``.
Pure: text in, (network, note) pairs out; the file I/O is the CLI's.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from typing import Any

from blockd.core.model import InputError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _net(text: Any, where: str) -> Network:
    if not isinstance(text, str):
        raise InputError(where, f"{text!r} is not a prefix")
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise InputError(where, f"{text!r} is not an IP prefix") from None


def _json_prefixes(data: Any, where: str) -> Iterator[tuple[Network, str]]:
    if not isinstance(data, dict):
        raise InputError(where, "a JSON list of prefixes must be an object")
    if "values" in data:  # Azure Service Tags
        for tag in data["values"]:
            name = tag.get("name", "Azure")
            for p in tag.get("properties", {}).get("addressPrefixes", []):
                yield _net(p, where), f"Azure {name}"
        return
    found = False
    for key in ("prefixes", "ipv6_prefixes"):  # AWS; Google has ipv4Prefix/ipv6Prefix
        for item in data.get(key, []):
            for field in ("ip_prefix", "ipv6_prefix", "ipv4Prefix", "ipv6Prefix"):
                if field in item:
                    label = item.get("service") or item.get("scope") or "cloud"
                    yield _net(item[field], where), str(label)
                    found = True
    for key in ("addresses", "ipv6_addresses"):  # Fastly
        for p in data.get(key, []):
            yield _net(p, where), "Fastly"
            found = True
    if not found:
        raise InputError(where, "no known list of prefixes in this JSON (AWS, Google, "
                                "Fastly or Azure Service Tags)")


def parse_provider_list(text: str, where: str) -> list[tuple[Network, str]]:
    """Every prefix of a provider's published list, with a short label."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(where, f"not valid JSON ({exc.msg}, line {exc.lineno})") \
                from None
        out = list(_json_prefixes(data, where))
    else:
        out = []
        for number, line in enumerate(text.splitlines(), 1):
            entry = line.split("#", 1)[0].strip()
            if entry:
                out.append((_net(entry, f"{where}:{number}"), "listed"))
    if not out:
        raise InputError(where, "holds no prefixes")
    return out
