"""A name's CNAME chain as the upstream resolvers answer it.

For the places that must see what the resolver sees without being the resolver: the
notice server (a Host that is blocked only through a CNAME gets the notice of the order
behind it) and ``blockd check --resolve``. One A query through :class:`Upstreams`; the
answer is walked by :func:`wire.layout`, never trusted further.
"""

from __future__ import annotations

import struct

from blockd.dns import wire
from blockd.dns.upstream import Upstreams

A_IN = bytes([0, 1, 0, 1])


class CnameChains:
    """:class:`blockd.core.ports.CnameResolver` over the configured upstreams."""

    def __init__(self, upstreams: Upstreams) -> None:
        self.upstreams = upstreams

    async def chain(self, name: str) -> tuple[str, ...] | None:
        """The CNAME targets of ``name`` (empty: none), or None when no upstream gave a
        usable answer."""
        try:
            answer = await self.upstreams.resolve(wire.encode_name(name) + A_IN, False)
        except (OverflowError, UnicodeEncodeError):
            return None
        if answer is None:
            return None
        try:
            return wire.layout(answer).chain
        except (ValueError, IndexError, struct.error):
            return None
