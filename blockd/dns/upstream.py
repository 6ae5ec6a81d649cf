"""Forwarding to upstream resolvers, with the RFC 5452 defences.

Each upstream query gets a fresh random ID and its own UDP socket (so a fresh random source
port), connected to the server so only its address can answer; an answer counts only if
its ID and question match. A timeout moves on to the next server; a truncated answer is
retried over TCP. Identical queries in flight share one upstream query, and the number in
flight is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import time
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field

from blockd.dns import wire

log = logging.getLogger("blockd.dns.upstream")

Address = tuple[str, int]


# Upper bounds (seconds) of the exchange-duration histogram; one more count for +Inf.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class UpstreamStats:
    """Plain ints, read at scrape time. ``queries`` counts exchanges with one server (a
    query that moves on to the next server counts twice); ``timeouts``, ``errors`` and
    ``mismatched`` are per exchange, ``failures`` per query (every server failed) and
    ``busy`` per query refused for too many in flight.

    The duration of every exchange (UDP, plus the TCP retry after TC; a timeout counts
    its full wait) goes into a fixed-bucket histogram: one ``bisect`` and one list
    increment, no prometheus_client object on the query path.
    """

    queries: int = 0
    timeouts: int = 0
    errors: int = 0
    mismatched: int = 0
    tcp_retries: int = 0
    failures: int = 0
    busy: int = 0
    duration_counts: list[int] = field(
        default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    duration_sum: float = 0.0

    def observe(self, seconds: float) -> None:
        self.duration_counts[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.duration_sum += seconds


class _Ids:
    """Random 16-bit query IDs from the kernel's CSPRNG, read in bulk (one syscall per 2048)."""

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def next(self) -> int:
        if self._at >= len(self._pool):
            self._pool, self._at = os.urandom(4096), 0
        value = int.from_bytes(self._pool[self._at : self._at + 2], "big")
        self._at += 2
        return value


class Upstreams:
    def __init__(self, servers: Sequence[Address], *, timeout: float = 1.5,
                 max_inflight: int = 2000) -> None:
        if not servers:
            raise ValueError("at least one upstream server is needed")
        self.servers = list(servers)
        self.timeout = timeout
        self.max_inflight = max_inflight
        self.stats = UpstreamStats()
        self._inflight: dict[tuple[bytes, bool, bool], asyncio.Future[bytes | None]] = {}
        self._ids = _Ids()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def resolve(self, question: bytes, do: bool, cd: bool = False) -> bytes | None:
        """The upstream answer for ``question`` (wire bytes), or None if every server failed.
        ``do`` and ``cd`` are the client's DNSSEC OK and Checking Disabled bits, passed on
        (RFC 4035 3.2.2: a CD query must reach the validating upstream as CD).

        Raises OverflowError when too many distinct queries are in flight already.
        """
        key = (question.lower(), do, cd)
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        if len(self._inflight) >= self.max_inflight:
            self.stats.busy += 1
            raise OverflowError("too many upstream queries in flight")
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await self._ask_all(question, do, cd)
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # consumed: waiters get it through shield
            raise
        finally:
            del self._inflight[key]

    async def _ask_all(self, question: bytes, do: bool, cd: bool) -> bytes | None:
        for server in self.servers:
            self.stats.queries += 1
            started = time.monotonic()
            try:
                answer = await self._udp(server, question, do, cd)
                if answer is not None and struct.unpack_from("!H", answer, 2)[0] & wire.TC:
                    self.stats.tcp_retries += 1
                    answer = await self._tcp(server, question, do, cd)
                if answer is not None:
                    return answer
                self.stats.timeouts += 1
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                self.stats.errors += 1
                log.debug("upstream %s:%s failed: %s", *server, exc)
            finally:
                self.stats.observe(time.monotonic() - started)
        self.stats.failures += 1
        return None

    def _message(self, ident: int, question: bytes, do: bool, cd: bool) -> bytes:
        flags = wire.RD | (wire.CD if cd else 0)
        return wire.header(ident, flags, ar=1) + question + wire.opt_record(do)

    def _matches(self, answer: bytes, ident: int, question: bytes) -> bool:
        if len(answer) < 12 + len(question):
            return False
        rid, flags, qd = struct.unpack_from("!HHH", answer)
        return (rid == ident and bool(flags & wire.QR) and qd == 1
                and answer[12 : 12 + len(question)].lower() == question.lower())

    async def _udp(self, server: Address, question: bytes, do: bool, cd: bool
                   ) -> bytes | None:
        """One UDP exchange on a fresh socket (the kernel picks a random source port).

        A reader callback and a timer instead of ``wait_for(sock_recv)``: the cache-miss
        path is dominated by per-query overhead, and this halves it.
        """
        loop = asyncio.get_running_loop()
        ident = self._ids.next()
        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        done: asyncio.Future[bytes | None] = loop.create_future()

        def readable() -> None:
            while not done.done():
                try:
                    answer = sock.recv(65535)
                except BlockingIOError:
                    return
                except OSError as exc:  # e.g. ICMP port unreachable: connection refused
                    done.set_exception(exc)
                    return
                if self._matches(answer, ident, question):
                    done.set_result(answer)
                else:
                    self.stats.mismatched += 1  # spoofed or stale: keep waiting

        def expire() -> None:
            if not done.done():
                done.set_result(None)

        try:
            sock.connect(server)  # only this address can answer (RFC 5452)
            sock.send(self._message(ident, question, do, cd))
            fd = sock.fileno()
            loop.add_reader(fd, readable)
            timer = loop.call_later(self.timeout, expire)
            try:
                return await done
            finally:
                timer.cancel()
                loop.remove_reader(fd)
        finally:
            sock.close()

    async def _tcp(self, server: Address, question: bytes, do: bool, cd: bool
                   ) -> bytes | None:
        ident = self._ids.next()
        message = self._message(ident, question, do, cd)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(*server), self.timeout)
        except TimeoutError:
            return None
        try:
            writer.write(struct.pack("!H", len(message)) + message)
            await writer.drain()
            length = struct.unpack("!H", await asyncio.wait_for(
                reader.readexactly(2), self.timeout))[0]
            answer = await asyncio.wait_for(reader.readexactly(length), self.timeout)
        except TimeoutError:
            return None
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return answer if self._matches(answer, ident, question) else None
