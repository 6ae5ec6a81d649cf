"""The notice server's sockets: aiohttp's low-level server with tight limits.

Limits against slow and greedy clients: request line and header fields of at most 4 KiB,
at most 50 headers, 5 s to send the first request (slowloris), 5 s keep-alive.
Bodies are never read. Each accepted connection is handled by ``GuardedHandler``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from blockd.config import Address
from blockd.core.model import BlockdError
from blockd.web.app import NoticeSite

log = logging.getLogger("blockd.http")

FIRST_REQUEST_TIMEOUT = 5.0
LIMITS: dict[str, Any] = {
    "max_line_size": 4096, "max_field_size": 4096, "max_headers": 50,
    "keepalive_timeout": 5.0, "lingering_time": 1.0, "access_log": None,
}


class GuardedHandler(RequestHandler):
    """Closes connections that have not completed a request within the time limit."""

    served = False
    _guard: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._guard = asyncio.get_running_loop().call_later(
            FIRST_REQUEST_TIMEOUT, self._too_slow, transport)

    def _too_slow(self, transport: asyncio.BaseTransport) -> None:
        if not self.served:
            transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._guard is not None:
            self._guard.cancel()
        super().connection_lost(exc)


class NoticeServer:
    def __init__(self, site: NoticeSite, listen: tuple[Address, ...],
                 tls: tuple[Address, ssl.SSLContext] | None = None) -> None:
        self.site = site
        self.listen = listen
        self.tls = tls
        self._servers: list[asyncio.Server] = []
        self._low: web.Server | None = None
        self.bound: list[tuple[str, int, bool]] = []

    async def start(self) -> list[tuple[str, int, bool]]:
        loop = asyncio.get_running_loop()
        low = web.Server(self.site.handle, **LIMITS)
        self._low = low

        def factory() -> GuardedHandler:
            return GuardedHandler(low, loop=loop, **LIMITS)

        endpoints: list[tuple[Address, ssl.SSLContext | None]] = [(a, None) for a in self.listen]
        if self.tls is not None:
            endpoints.append(self.tls)
        for (host, port), context in endpoints:
            try:
                server = await loop.create_server(
                    factory, host, port, ssl=context, reuse_address=True,
                    family=socket.AF_INET6 if ":" in host else socket.AF_INET)
            except OSError as exc:
                await self.stop()
                raise BlockdError(f"cannot listen on {host} port {port}: {exc.strerror}") \
                    from None
            bound = int(server.sockets[0].getsockname()[1])
            self._servers.append(server)
            self.bound.append((host, bound, context is not None))
            log.info("notice server on %s port %s%s", host, bound,
                     " (TLS)" if context else "")
        return self.bound

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        if self._low is not None:
            await self._low.shutdown(2.0)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
