"""Active checks against the running services, for `blockd verify`: does the resolver
answer a blocked name as the order's policy says, with EDE 16 naming the order; does the
notice server answer 451 naming it; is each address target in the kernel's sets.

What to expect is computed from the same policy objects the daemons use; the probes are
plain sockets (one query or request at a time, read only), so a check never changes
what it checks.
"""

from __future__ import annotations

import http.client
import ipaddress
import secrets
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

from blockd.core.enforcement import EnforcementPolicy
from blockd.core.model import Action, DomainMatch, OrderRecord, Target, TargetKind
from blockd.dns.wire import EDE_CENSORED, EDE_OPTION

Address = tuple[str, int]
TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Check:
    """One probe's outcome."""

    reference: str
    target: str  # the order's target
    subject: str  # the name or address probed
    channel: str  # dns, http, nft
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"order": self.reference, "target": self.target, "subject": self.subject,
                "channel": self.channel, "ok": self.ok, "detail": self.detail}


def probe_names(target: Target) -> list[str]:
    """The names to ask for a domain target: the name itself unless only subdomains are
    blocked, and one random subdomain unless only the name itself is."""
    names = []
    if target.match is not DomainMatch.WILDCARD:
        names.append(target.value)
    if target.match is not DomainMatch.EXACT:
        names.append(f"verify-{secrets.token_hex(4)}.{target.value}")
    return names


def loopback_for(address: Address) -> Address:
    """Where to reach a listener bound to a wildcard address from this host."""
    host, port = address
    if host in ("0.0.0.0", ""):
        return "127.0.0.1", port
    if host == "::":
        return "::1", port
    return host, port


def check_dns(server: Address, order: OrderRecord, target: Target, name: str,
              policy: EnforcementPolicy, notice_ipv4: str | None) -> Check:
    """Ask ``server`` for ``name`` (A, with EDNS) and compare with the policy's answer."""
    def result(ok: bool, detail: str) -> Check:
        return Check(order.reference, target.spec, name, "dns", ok, detail)

    query = DNSRecord.question(name, "A")
    query.add_ar(EDNS0(udp_len=1232))
    host, port = server
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.sendto(query.pack(), (host, port))
            while True:
                data, _ = sock.recvfrom(65535)
                if data[:2] == query.pack()[:2]:
                    break
    except TimeoutError:
        return result(False, f"no answer from {host}:{port} within {TIMEOUT:g} s")
    except OSError as exc:
        return result(False, f"no answer from {host}:{port}: {exc.strerror or exc}")
    try:
        reply = DNSRecord.parse(data)
    except Exception as exc:  # dnslib raises several types on a malformed message
        return result(False, f"malformed answer: {exc}")
    rcode = RCODE.get(reply.header.rcode)
    addresses = [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]
    ede = _ede(reply)
    action = policy.dns_action
    want = {Action.NXDOMAIN: ("NXDOMAIN", []), Action.REFUSED: ("REFUSED", []),
            Action.NODATA: ("NOERROR", []),
            Action.NOTICE: ("NOERROR", [notice_ipv4] if notice_ipv4 else [])}[action]
    got = f"{rcode} {' '.join(addresses) or '(no address)'}"
    if (rcode, addresses) != want:
        return result(False, f"answered {got}; the {policy.name} policy wants "
                             f"{want[0]} {' '.join(want[1]) or '(no address)'}")
    if ede is None:
        return result(False, f"answered {got} without EDE 16 (Censored)")
    if order.reference not in ede:
        return result(False, f"EDE 16 does not name order {order.reference}: {ede!r}")
    return result(True, f"{got}, EDE 16 names {order.reference}")


def _ede(reply: DNSRecord) -> str | None:
    """The EXTRA-TEXT of an EDE 16 option, or None."""
    for rr in reply.ar:
        if rr.rtype != QTYPE.OPT:
            continue
        for option in rr.rdata:
            data = bytes(getattr(option, "data", b""))
            if getattr(option, "code", None) == EDE_OPTION and len(data) >= 2 \
                    and int.from_bytes(data[:2], "big") == EDE_CENSORED:
                return data[2:].decode("utf-8", "replace")
    return None


def check_http(server: Address, order: OrderRecord, target: Target, name: str) -> Check:
    """GET / with Host: ``name``; the notice server must answer 451 naming the order."""
    host, port = server
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        conn.request("GET", "/", headers={"Host": name, "User-Agent": "blockd-verify"})
        response = conn.getresponse()
        body = response.read(1_000_000).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as exc:
        return Check(order.reference, target.spec, name, "http", False,
                     f"no answer from {host}:{port}: {exc}")
    finally:
        conn.close()
    if response.status != 451:
        return Check(order.reference, target.spec, name, "http", False,
                     f"answered {response.status}, not 451")
    if order.reference not in body:
        return Check(order.reference, target.spec, name, "http", False,
                     f"451 without naming order {order.reference}")
    return Check(order.reference, target.spec, name, "http", True,
                 f"451 names {order.reference}")


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def check_nft(order: OrderRecord, target: Target, kernel: Mapping[int, Iterable[Network]],
              refused: bool) -> Check:
    """Is the target's prefix inside a prefix of the kernel's sets (read beforehand)?"""
    net = ipaddress.ip_network(target.value)
    if refused:
        return Check(order.reference, target.spec, target.value, "nft", True,
                     "refused by the overblocking guard and not forced: not expected in "
                     "the kernel")
    for have in kernel.get(net.version, ()):
        if net.version == have.version and net.subnet_of(have):  # type: ignore[arg-type]
            return Check(order.reference, target.spec, target.value, "nft", True,
                         f"in the kernel's set (as {have})")
    return Check(order.reference, target.spec, target.value, "nft", False,
                 "not in the kernel's sets (table inet blockd)")


def is_address(target: Target) -> bool:
    return target.kind is not TargetKind.DOMAIN
