"""Where a connection redirected to the notice server by DNAT was really going.

An address block rewrites the destination of a subscriber's connection to the notice
server (nftables DNAT); the kernel keeps the original destination, which
``SO_ORIGINAL_DST`` reads back from the accepted socket.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

SO_ORIGINAL_DST = 80  # netfilter: the destination before DNAT (IPv4 and IPv6)


def original_destination(sock: socket.socket | None) -> str | None:
    """The address a DNAT'd connection was really for (None if it was not redirected)."""
    if sock is None:
        return None
    try:
        if sock.family == socket.AF_INET:
            raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            original = str(ipaddress.IPv4Address(raw[4:8]))
        else:
            raw = sock.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
            original = str(ipaddress.IPv6Address(raw[8:24]))
        local = sock.getsockname()[0]
    except (OSError, ValueError, struct.error):
        return None
    return None if original == local else original
