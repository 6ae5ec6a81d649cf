"""UDP and TCP transports for the resolver, and the handle that starts and stops them.

Thin: move bytes between sockets and :class:`DnsService`. TCP follows RFC 7766: several
queries per connection, answered as they complete, an idle timeout, and a bound on the
queries one connection may have outstanding. Used by ``blockd serve dns`` and by tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Awaitable
from typing import Any

from blockd.config import Address
from blockd.core.model import BlockdError
from blockd.daemon.tasks import Tasks
from blockd.dns.service import DnsService

log = logging.getLogger("blockd.dns")

MAX_PER_CONNECTION = 32


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, service: DnsService, tasks: Tasks) -> None:
        self.service = service
        self.tasks = tasks
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        reply = self.service.handle(data, addr[0], tcp=False)
        if reply is None:
            return
        if isinstance(reply, bytes):
            self._send(reply, addr)
        else:
            self.tasks.spawn(self._later(reply, addr))

    async def _later(self, reply: Awaitable[bytes | None], addr: tuple[Any, ...]) -> None:
        message = await reply
        if message is not None:
            self._send(message, addr)

    def _send(self, message: bytes, addr: tuple[Any, ...]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(message, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP errors: nothing to do
        log.debug("udp error: %s", exc)


class DnsServer:
    """Listens on the given addresses; ``start`` returns the bound (address, port) pairs."""

    def __init__(self, service: DnsService, listen: tuple[Address, ...], *,
                 idle_timeout: float = 10.0, reuse_port: bool = False) -> None:
        self.service = service
        self.listen = listen
        self.idle_timeout = idle_timeout
        self.reuse_port = reuse_port
        self.tasks = Tasks()
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: list[asyncio.Server] = []
        self.bound: list[Address] = []

    async def start(self) -> list[Address]:
        """Bind UDP and TCP on each address; raises BlockdError with a one-line reason."""
        for host, port in self.listen:
            for attempt in range(20):
                try:
                    bound = await self._bind(host, port)
                    break
                except OSError as exc:
                    # port 0: the free UDP port may be taken for TCP; try another
                    if port != 0 or attempt == 19:
                        await self.stop()
                        raise BlockdError(
                            f"cannot listen on {host} port {port}: {exc.strerror}") from None
            self.bound.append((host, bound))
            log.info("dns listening on %s port %s (udp, tcp)", host, bound)
        return self.bound

    async def _bind(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        udp_sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if self.reuse_port:
                udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                udp_sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            udp_sock.bind((host, port))
            port = udp_sock.getsockname()[1]  # port 0: TCP takes the same port
            server = await asyncio.start_server(
                self._tcp_client, host, port, reuse_address=True,
                reuse_port=self.reuse_port or None, limit=70_000,
            )
        except OSError:
            udp_sock.close()
            raise
        transport, _ = await loop.create_datagram_endpoint(
            lambda: UdpProtocol(self.service, self.tasks), sock=udp_sock)
        self._udp.append(transport)
        self._tcp.append(server)
        return int(port)

    async def stop(self) -> None:
        for t in self._udp:
            t.close()
        for s in self._tcp:
            s.close()
        await self.tasks.cancel_all()
        for s in self._tcp:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.wait_closed(), 2)

    async def _tcp_client(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = peer[0] if peer else ""
        slots = asyncio.Semaphore(MAX_PER_CONNECTION)
        pending: set[asyncio.Task[None]] = set()
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readexactly(2), self.idle_timeout)
                    (length,) = struct.unpack("!H", head)
                    data = await asyncio.wait_for(reader.readexactly(length), self.idle_timeout)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    break
                reply = self.service.handle(data, client, tcp=True)
                if reply is None:
                    continue
                if isinstance(reply, bytes):
                    self._write(writer, reply)
                    await writer.drain()
                    continue
                await slots.acquire()
                task = self.tasks.spawn(self._tcp_later(reply, writer, slots))
                pending.add(task)
                task.add_done_callback(pending.discard)
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _tcp_later(self, reply: Awaitable[bytes | None], writer: asyncio.StreamWriter,
                         slots: asyncio.Semaphore) -> None:
        try:
            message = await reply
            if message is not None and not writer.is_closing():
                self._write(writer, message)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            slots.release()

    @staticmethod
    def _write(writer: asyncio.StreamWriter, message: bytes) -> None:
        writer.write(struct.pack("!H", len(message)) + message)
