"""The notice server's sockets: a fast path for plain notices, aiohttp for the rest.

The site (``app.py``) decides and renders; this module moves bytes. ``FastProtocol``
answers plain GET/HEAD requests for blocked hosts straight from bytes the site caches;
anything else hands the connection, with what it has buffered, to aiohttp's low-level
server, where ``handle`` turns the request into a ``Request`` (reading the pre-DNAT
destination from the socket) and the site's ``Page`` into a response.

Limits against slow and greedy clients: request line and header fields of at most 4 KiB,
at most 50 headers, 5 s to send the first request (slowloris), 5 s keep-alive.
Bodies are never read.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from blockd.config import Address
from blockd.core.model import BlockdError
from blockd.web.app import NoticeSite, Request
from blockd.web.dnat import original_destination

log = logging.getLogger("blockd.http")

FIRST_REQUEST_TIMEOUT = 5.0
LIMITS: dict[str, Any] = {
    "max_line_size": 4096, "max_field_size": 4096, "max_headers": 50,
    "keepalive_timeout": 5.0, "lingering_time": 1.0, "access_log": None,
}


class _BadRequests(logging.Filter):
    """Drop aiohttp's traceback for each malformed request (answered 400/431 anyway):
    otherwise anyone can flood the logs. Counted instead."""

    dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            _BadRequests.dropped += 1
            return False
        return True


logging.getLogger("aiohttp.server").addFilter(_BadRequests())


def handler(site: NoticeSite) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    """aiohttp's request handler: the request as plain values in, the site's page out."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        request.protocol.served = True  # type: ignore[attr-defined]  # see GuardedHandler
        transport = request.transport
        headers = request.headers
        page = await site.respond(Request(
            method=request.method, path=request.path, lang=request.query.get("lang"),
            host=headers.get("Host"), accept_language=headers.get("Accept-Language"),
            original=original_destination(
                transport.get_extra_info("socket") if transport is not None else None)))
        return web.Response(status=page.status, body=page.body, headers=page.headers)

    return handle


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


_DATE_CACHE: list[Any] = [0, b""]


def _date_header() -> bytes:
    now = int(time.time())
    if _DATE_CACHE[0] != now:
        _DATE_CACHE[0] = now
        _DATE_CACHE[1] = b"Date: " + email.utils.formatdate(now, usegmt=True).encode() + b"\r\n"
    return bytes(_DATE_CACHE[1])


class FastProtocol(asyncio.Protocol):
    """Answers plain GET/HEAD requests for blocked hosts straight from cached bytes.

    aiohttp costs tens of microseconds per request; a subscriber's browser hitting the
    notice page needs none of it. Anything else (a body, an unusual header, another path
    under /.well-known or /healthz, a host that is not blocked, an oversized head) hands
    the connection, with what it has buffered, to aiohttp's handler for good.
    """

    def __init__(self, site: NoticeSite, fallback: Callable[[], RequestHandler]) -> None:
        self.site = site
        self.fallback = fallback
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.served = False
        self._guard: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._guard = asyncio.get_running_loop().call_later(
            FIRST_REQUEST_TIMEOUT, self._too_slow)

    def _too_slow(self) -> None:
        if not self.served and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._guard is not None:
            self._guard.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > 8192:
                    self._hand_over()
                return
            reply = self._answer(self.buffer[:end])
            if reply is None:
                self._hand_over()
                return
            self.served = True
            self.buffer = self.buffer[end + 4 :]
            response, close = reply
            self.transport.write(response)
            if close:
                self.transport.close()
                return

    def _answer(self, head: bytes) -> tuple[bytes, bool] | None:
        lines = head.split(b"\r\n")
        if len(lines) > LIMITS["max_headers"] or any(len(x) > 4096 for x in lines):
            return None  # aiohttp refuses it properly
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD"):
            return None
        method, target, version = parts
        if version not in (b"HTTP/1.1", b"HTTP/1.0") or not target.startswith(b"/"):
            return None
        if target.startswith((b"/.well-known/", b"/healthz")):
            return None
        host = accept = None
        close = version == b"HTTP/1.0"
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                return None
            key = name.strip().lower()
            if key == b"host":
                host = value.strip().decode("latin-1")
            elif key == b"accept-language":
                accept = value.strip().decode("latin-1")
            elif key in (b"content-length", b"transfer-encoding", b"expect", b"upgrade"):
                if key != b"content-length" or value.strip() != b"0":
                    return None
            elif key == b"connection":
                close = value.strip().lower() == b"close"
        if not host:
            return None
        lang = None
        if b"?" in target:
            for param in target.split(b"?", 1)[1].split(b"&"):
                if param.startswith(b"lang="):
                    lang = param[5:].decode("latin-1")
        page = self.site.fast_notice(host, accept, lang)
        if page is None:
            return None
        head, body = page
        message = head + _date_header() + (b"Connection: close\r\n" if close else b"") + b"\r\n"
        if method == b"GET":
            message += body
        return message, close

    def _hand_over(self) -> None:
        transport = self.transport
        if transport is None:
            return
        if self._guard is not None:
            self._guard.cancel()
        handler = self.fallback()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self.served:
            handler.served = True  # type: ignore[attr-defined]
        buffered, self.buffer = self.buffer, b""
        if buffered:
            handler.data_received(buffered)
        self.transport = None


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
        low = web.Server(handler(self.site), **LIMITS)
        self._low = low

        def slow() -> GuardedHandler:
            return GuardedHandler(low, loop=loop, **LIMITS)

        def factory() -> FastProtocol:
            return FastProtocol(self.site, slow)

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
