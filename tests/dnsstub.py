"""A small authoritative DNS server for tests: the "internet" behind blockd's resolver.

Runs in its own thread with its own event loop on 127.0.0.1 (UDP and TCP, one port), so a
blockd daemon in a subprocess or in-process can forward to it. Records are zone-file
lines; unknown names get NXDOMAIN with an SOA. Switches let a test make it silent
(upstream down) or truncate UDP answers for some names (TC, then TCP retry).
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Iterable
from typing import Any

from dnslib import QTYPE, RCODE, RR, DNSRecord  # type: ignore[import-untyped]

SOA_LINE = "example. 300 IN SOA ns.example. hostmaster.example. 1 3600 600 86400 60"


class StubUpstream:
    def __init__(self, records: Iterable[str] = ()) -> None:
        self.records: list[Any] = []
        for line in records:
            self.records.extend(RR.fromZone(line))
        self.silent = False
        self.truncate_udp: set[str] = set()
        self.queries: list[tuple[str, str, str]] = []  # (transport, name, type)
        self.flags: list[int] = []  # the header flags of each query received
        self.ad_names: set[str] = set()  # answered with AD set (as a validating server)
        self.glue: dict[str, int] = {}  # name -> number of A records in the additional
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    # -- lifecycle -----------------------------------------------------------------

    def __enter__(self) -> StubUpstream:
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("stub upstream did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def add(self, line: str) -> None:
        self.records.extend(RR.fromZone(line))

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        stub = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport: Any) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: Any) -> None:
                reply = stub.answer(data, "udp")
                if reply is not None:
                    self.transport.sendto(reply, addr)

        async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    (n,) = struct.unpack("!H", await reader.readexactly(2))
                    reply = stub.answer(await reader.readexactly(n), "tcp")
                    if reply is not None:
                        writer.write(struct.pack("!H", len(reply)) + reply)
                        await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        async def start() -> tuple[Any, Any]:
            for _ in range(50):  # a UDP port whose TCP twin is free too
                transport, _ = await loop.create_datagram_endpoint(
                    Udp, local_addr=("127.0.0.1", 0))
                self.port = transport.get_extra_info("sockname")[1]
                try:
                    server = await asyncio.start_server(tcp, "127.0.0.1", self.port)
                except OSError:
                    transport.close()
                    await asyncio.sleep(0)
                    continue
                return transport, server
            raise RuntimeError("no port free for both UDP and TCP")

        async def close(transport: Any, server: Any) -> None:
            transport.close()
            server.close()
            await server.wait_closed()
            await asyncio.sleep(0.01)  # let the transports finish closing before the loop

        transport, server = loop.run_until_complete(start())
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(close(transport, server))
        loop.close()

    # -- answers -------------------------------------------------------------------

    def _raw_nxdomain(self, data: bytes) -> bytes | None:
        """NXDOMAIN for a one-question query dnslib cannot parse, built from the bytes."""
        if len(data) < 17 or struct.unpack_from("!H", data, 4)[0] != 1:
            return None
        pos = 12
        labels = []
        while data[pos]:
            labels.append(data[pos + 1 : pos + 1 + data[pos]].decode("latin-1").lower())
            pos += 1 + data[pos]
        end = pos + 5
        self.queries.append(("udp", ".".join(labels), "?"))
        self.flags.append(struct.unpack_from("!H", data, 2)[0])
        ident, flags = struct.unpack_from("!HH", data)
        header = struct.pack("!HHHHHH", ident, 0x8000 | (flags & 0x0100) | 0x0080 | 3,
                             1, 0, 0, 0)
        return header + data[12:end]

    def answer(self, data: bytes, transport: str) -> bytes | None:
        if self.silent:
            return None
        try:
            query = DNSRecord.parse(data)
        except Exception:
            return self._raw_nxdomain(data)  # e.g. a label dnslib cannot decode
        q = query.q
        name = str(q.qname).lower()
        self.queries.append((transport, name.rstrip("."), QTYPE[q.qtype]))
        self.flags.append(struct.unpack_from("!H", data, 2)[0])
        reply = query.reply()
        if name.rstrip(".") in self.ad_names:
            reply.header.ad = 1
        for i in range(self.glue.get(name.rstrip("."), 0)):
            reply.add_ar(*RR.fromZone(f"ns{i}.glue-for.example. 300 IN A 192.0.2.{i % 250}"))
        if transport == "udp" and name.rstrip(".") in self.truncate_udp:
            reply.header.tc = 1
            return reply.pack()
        target = name
        found = False
        for _ in range(8):  # follow CNAMEs inside our own data
            matches = [r for r in self.records if str(r.rname).lower() == target]
            if not matches:
                break
            found = True
            cnames = [r for r in matches if r.rtype == QTYPE.CNAME]
            if cnames and q.qtype != QTYPE.CNAME:
                reply.add_answer(cnames[0])
                target = str(cnames[0].rdata.label).lower()
                continue
            for r in matches:
                if r.rtype == q.qtype or q.qtype == QTYPE.ANY:  # ANY: everything, old-style
                    reply.add_answer(r)
            break
        if not reply.rr:
            if not found:
                reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(*RR.fromZone(SOA_LINE))
        return reply.pack()
