"""The notice server's sockets: a fast path for plain notices, aiohttp for the rest.

The site (``app.py``) decides and renders; this module moves bytes. ``FastProtocol``
answers plain GET/HEAD requests for blocked hosts straight from bytes the site caches
(``fast_reply`` decides); anything else hands the connection, with what it has buffered,
to aiohttp's low-level server, where ``handle`` turns the request into a ``Request``
(reading the pre-DNAT destination from the socket) and the site's ``Page`` into a response.

Limits against slow and greedy clients: request line and header fields of at most 4 KiB,
at most 50 headers, 5 s to send the first request (slowloris), 5 s keep-alive.
Bodies are never read.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from blockd.config import Address
from blockd.core.model import BlockdError
from blockd.web.app import NoticeSite, Request
from blockd.web.connections import Conn, Connections
from blockd.web.dnat import original_destination

log = logging.getLogger("blockd.http")

FIRST_REQUEST_TIMEOUT = 5.0
MAX_LINE = 4096
MAX_HEADERS = 50
MAX_HEAD = 8192
BACKLOG = 4096  # connections the kernel queues before accept (capped by somaxconn): a
# flood of connects must not make a browser wait for a SYN retransmit
LIMITS: dict[str, Any] = {
    "max_line_size": MAX_LINE, "max_field_size": MAX_LINE, "max_headers": MAX_HEADERS,
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


def bad_requests() -> int:
    """Malformed requests aiohttp answered 400/431 in this process (for the metrics)."""
    return _BadRequests.dropped


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
                transport.get_extra_info("socket") if transport is not None else None),
            client=request.remote))
        return web.Response(status=page.status, body=page.body, headers=page.headers)

    return handle


class GuardedHandler(RequestHandler):
    """Closes connections that have not completed a request within the time limit, and
    tells the connection registry when a handed-over connection ends."""

    served = False
    _guard: asyncio.TimerHandle | None = None
    tracked: tuple[Connections, Conn] | None = None

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
        if self.tracked is not None:
            registry, conn = self.tracked
            registry.gone(conn)
        super().connection_lost(exc)


_DATE_CACHE: list[Any] = [0, b""]


def _date_header() -> bytes:
    now = int(time.time())
    if _DATE_CACHE[0] != now:
        _DATE_CACHE[0] = now
        _DATE_CACHE[1] = b"Date: " + email.utils.formatdate(now, usegmt=True).encode() + b"\r\n"
    return bytes(_DATE_CACHE[1])


class FastSite(Protocol):
    """What the fast path needs from the site (``NoticeSite.fast_notice``)."""

    def fast_notice(self, host: str, accept: str | None, override: str | None,
                    client: str | None = None) -> tuple[bytes, bytes] | None: ...


# A request head the fast path may answer (RFC 9112, as strict as h11 or stricter):
# GET or HEAD, an origin-form target of visible ASCII, HTTP/1.0 or 1.1, then header
# fields "token:value" on lines ended by CRLF only: no whitespace before the colon, no
# obs-fold continuation lines, no NUL/CR/LF/VT/FF in a value.
_HEAD = re.compile(
    rb"(?:GET|HEAD) /[!-~]*+ HTTP/1\.[01]"
    rb"(?:\r\n[-!#$%&'*+.^_`|~0-9A-Za-z]++:[^\x00\n\r\x0b\x0c]*+)*+")

Head = tuple[str, str | None, str | None, bool, bool]
"""A head the fast path may answer: Host, Accept-Language, ?lang=, is GET, close after."""

_HEADS: dict[bytes, Head] = {}  # browsers and benchmarks repeat the same head
HEADS_CACHED = 4096
HEAD_CACHED_SIZE = 1024


def parse_head(head: bytes) -> Head | None:
    """What the fast path needs from ``head`` (without its blank line), or None.

    None (hand over to aiohttp) unless the head is a plain GET/HEAD without a body, with
    exactly one non-empty Host and at most one Accept-Language, for a path that is not
    /healthz or under /.well-known/, within aiohttp's limits.
    """
    if _HEAD.fullmatch(head) is None:
        return None
    lines = head.split(b"\r\n")
    if len(lines) > MAX_HEADERS or (
            len(head) > MAX_LINE and any(len(x) > MAX_LINE for x in lines)):
        return None  # aiohttp refuses it properly
    method, target, version = lines[0].split(b" ")
    if target.startswith((b"/.well-known/", b"/healthz")):
        return None
    host = accept = None
    close = version == b"HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        key = name.lower()
        if key == b"host":
            if host is not None:
                return None
            host = value.strip().decode("latin-1")
        elif key == b"accept-language":
            if accept is not None:
                return None
            accept = value.strip().decode("latin-1")
        elif key in (b"content-length", b"transfer-encoding", b"expect", b"upgrade"):
            if key != b"content-length" or value.strip() != b"0":
                return None
        elif key == b"connection":
            value = value.lower()
            if b"close" in value and b"close" in [t.strip() for t in value.split(b",")]:
                close = True
    if not host:
        return None
    lang = None
    if b"?" in target:  # the first lang= as aiohttp reads it; it decodes %xx and +
        query = target.split(b"?", 1)[1]
        if b"%" in query or b"+" in query or b"#" in target:
            return None
        for param in query.split(b"&"):
            key, _, value = param.partition(b"=")
            if key == b"lang":
                lang = value.decode("ascii")
                break
    return host, accept, lang, method == b"GET", close


def fast_reply(site: FastSite, head: bytes, client: str | None = None
               ) -> tuple[bytes, bool] | None:
    """The complete response to ``head`` and whether to close after it, or None.

    None (hand over) if ``parse_head`` refuses the head or the site has no cached
    notice for its Host. Parsed heads are remembered: the same bytes come again and again.
    """
    parsed = _HEADS.get(head)
    if parsed is None:
        parsed = parse_head(head)
        if parsed is None:
            return None
        if len(head) <= HEAD_CACHED_SIZE:
            if len(_HEADS) >= HEADS_CACHED:
                _HEADS.clear()
            _HEADS[head] = parsed
    host, accept, lang, get, close = parsed
    page = site.fast_notice(host, accept, lang, client)
    if page is None:
        return None
    start, body = page
    message = start + _date_header() + (b"Connection: close\r\n" if close else b"") + b"\r\n"
    if get:
        message += body
    return message, close


class FastProtocol(asyncio.Protocol):
    """Answers plain GET/HEAD requests for blocked hosts straight from cached bytes.

    aiohttp costs tens of microseconds per request; a subscriber's browser hitting the
    notice page needs none of it. Anything else (see ``fast_reply``; also a head that
    does not end in CRLF CRLF, or an oversized one) hands the connection, with what it
    has buffered, to aiohttp's handler for good.
    """

    def __init__(self, site: FastSite, fallback: Callable[[], RequestHandler],
                 connections: Connections | None = None) -> None:
        self.site = site
        self.fallback = fallback
        self.connections = connections if connections is not None else Connections()
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.served = False
        self.conn: Conn | None = None
        self.client: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admitted, or closed at once when its client or the server is at its cap. The
        registry closes it if no (next) request is complete within the idle timeout."""
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if peer else None
        conn = self.connections.admit(self.client or "", transport.close)
        if conn is None:
            transport.close()
            return
        self.conn = conn
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.conn is not None:
            self.connections.gone(self.conn)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                buffer = self.buffer
                if len(buffer) > MAX_HEAD or b"\n\n" in buffer or b"\n\r\n" in buffer:
                    self._hand_over()  # too long, or ended by a bare LF
                return
            reply = fast_reply(self.site, self.buffer[:end], self.client)
            if reply is None:
                self._hand_over()
                return
            self.served = True
            self.buffer = self.buffer[end + 4 :]
            response, close = reply
            self.transport.write(response)
            if self.conn is not None:
                self.connections.idle(self.conn)
            if close:
                self.transport.close()
                return

    def _hand_over(self) -> None:
        transport = self.transport
        if transport is None:
            return
        handler = self.fallback()
        if self.conn is not None:  # aiohttp's own timeouts take over from here
            self.connections.busy(self.conn)
            if isinstance(handler, GuardedHandler):
                handler.tracked = (self.connections, self.conn)
            self.conn = None
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
                 tls: tuple[Address, ssl.SSLContext] | None = None,
                 connections: Connections | None = None) -> None:
        self.site = site
        self.listen = listen
        self.tls = tls
        self._servers: list[asyncio.Server] = []
        self._low: web.Server | None = None
        self.bound: list[tuple[str, int, bool]] = []
        self.connections = connections

    async def start(self) -> list[tuple[str, int, bool]]:
        loop = asyncio.get_running_loop()
        low = web.Server(handler(self.site), **LIMITS)
        self._low = low

        def slow() -> GuardedHandler:
            return GuardedHandler(low, loop=loop, **LIMITS)

        if self.connections is None:  # sized from the file limit in force now
            self.connections = Connections()
        connections = self.connections
        connections.start()

        def factory() -> FastProtocol:
            return FastProtocol(self.site, slow, connections)

        endpoints: list[tuple[Address, ssl.SSLContext | None]] = [(a, None) for a in self.listen]
        if self.tls is not None:
            endpoints.append(self.tls)
        for (host, port), context in endpoints:
            try:
                server = await loop.create_server(
                    factory, host, port, ssl=context, reuse_address=True, backlog=BACKLOG,
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
        if self.connections is not None:
            self.connections.stop()
        for server in self._servers:
            server.close()
        if self._low is not None:
            await self._low.shutdown(2.0)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
