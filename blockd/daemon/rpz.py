"""The RPZ primary as a handle: ``RpzDaemon(core).start()`` serves the policy zone over
UDP and TCP until stop().

The sockets around :class:`~blockd.rpz.primary.Primary`. On every swap of the core's index
(a journal entry, or an order entering or leaving force by the clock) the difference is
computed in a worker thread and installed as a new version with a new serial; then each
configured secondary gets a NOTIFY, retried until it answers. What each secondary last
asked and fetched is written to ``<state dir>/rpz.json`` (atomically, at most twice a
second), which ``blockd rpz status`` reads; the file also keeps the serial across
restarts. With ``[rpz] metrics`` (``--metrics``) it serves ``/metrics`` and ``/healthz``
like the other daemons, from the counters in :class:`RpzStats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blockd.config import Address
from blockd.core.index import BlockIndex
from blockd.daemon.core import Core
from blockd.daemon.dns import hostport
from blockd.daemon.metrics import MetricsServer, address_line, rpz_group
from blockd.daemon.tasks import Tasks
from blockd.rpz.primary import (
    Primary,
    Reply,
    TsigKey,
    Version,
    Zone,
    notify_acknowledged,
    notify_message,
    serial_after,
)
from blockd.rpz.zone import SlotWire, ZoneSettings

log = logging.getLogger("blockd.rpz")

STATE_FILE = "rpz.json"
TCP_IDLE = 10.0  # seconds a transfer connection may sit without a query
NOTIFY_TRIES = 5
NOTIFY_FIRST_WAIT = 1.0  # seconds before the first retry; doubled after each
WRITE_EVERY = 0.5  # seconds between writes of the status file at most


@dataclass
class RpzStats:
    """What ``/metrics`` reports: plain counters the serving paths increment."""

    transfers: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, result)
    notify_sent: int = 0
    notify_failed: int = 0
    records: int | None = None  # records in the current version (None: not counted yet)
    # (serial, Unix time it was installed) of the versions since start, oldest first:
    # how long a secondary's serial has been behind is read from it
    installed: list[tuple[int, float]] = field(default_factory=list)

    def behind_since(self, serial: int | None, current: int) -> float | None:
        """When ``serial`` stopped being current (None: it is current). A serial older
        than every version since start has been behind since the start, at least."""
        if serial == current:
            return None
        for i, (have, _) in enumerate(self.installed[:-1]):
            if have == serial:
                return self.installed[i + 1][1]
        return self.installed[0][1] if self.installed else time.time()


HISTORY_TIMES = 1000  # install times kept (a secondary further behind is at the oldest)


def secondary_serial(entry: dict[str, Any]) -> int | None:
    """The serial a secondary is known to hold: that of its last transfer answer (an
    IXFR answered "up to date" is one: it holds the current serial then). A SOA query
    alone says nothing of what it holds."""
    transfer = entry.get("transfer")
    if isinstance(transfer, dict) and isinstance(transfer.get("serial"), int):
        return int(transfer["serial"])
    return None


def _records_of(version: Version, settings: ZoneSettings) -> int:
    return SlotWire(version.index, settings).count() + len(version.apex)


def state_file(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def read_state(path: Path) -> dict[str, Any] | None:
    """The status file, or None if missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _now_text() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, daemon: RpzDaemon) -> None:
        self.daemon = daemon
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        reply = self.daemon.answer(data, addr[0], tcp=False)
        for message in reply.messages:  # over UDP one message at most
            if self.transport is not None:
                self.transport.sendto(message, addr)
            break
        self.daemon.count(reply)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error: %s", exc)


class RpzDaemon:
    """``blockd serve rpz`` on a core."""

    name = "rpz"

    def __init__(self, core: Core, key: TsigKey | None = None) -> None:
        self.core = core
        config = core.config
        self.listen = config.rpz_listen
        self.notify_to = list(config.rpz_notify)
        self.key = key if key is not None else (
            TsigKey.load(config.rpz_tsig_key) if config.rpz_tsig_key else None)
        ttl = min((p.dns_ttl for p in core.enforcement.values()), default=30)
        self.settings = ZoneSettings.checked(config.rpz_zone, config.notice_ipv4,
                                             config.notice_ipv6, ttl)
        self.path = state_file(config.state_path())
        self.zone: Zone | None = None
        self.primary: Primary | None = None
        self.bound: list[Address] = []
        self.secondaries: dict[str, dict[str, Any]] = {}
        self.notified: dict[str, dict[str, Any]] = {}
        self.tasks = Tasks()
        self._servers: list[asyncio.AbstractServer] = []
        self._udp: list[asyncio.DatagramTransport] = []
        self._changed = asyncio.Event()
        self._notify_events: dict[Address, asyncio.Event] = {}
        self._dirty = True
        self.stats = RpzStats()
        self.metrics = (MetricsServer(core.metrics, *config.rpz_metrics)
                        if config.rpz_metrics is not None else None)
        self.metrics_bound: Address | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> list[Address]:
        """Start the core if needed, build the zone, bind every listen address (UDP and
        TCP on the same port; port 0 picks one), NOTIFY the secondaries."""
        core = self.core
        await core.start()
        old = read_state(self.path) or {}
        previous = old.get("serial")
        now = int(time.time())
        serial = serial_after(previous, now) if isinstance(previous, int) else now
        old_secondaries = old.get("secondaries")
        if isinstance(old_secondaries, dict):
            self.secondaries = {str(k): v for k, v in old_secondaries.items()
                                if isinstance(v, dict)}
        self.zone = Zone(self.settings, core.index, core.follower.head_hash, serial)
        self.primary = Primary(self.zone, core.config.rpz_allow_transfer, self.key)
        self.stats.installed.append((serial, time.time()))
        core.metrics.add("rpz", rpz_group(self))
        try:
            for host, port in self.listen:
                await self._bind(host, port)
            if self.metrics is not None:
                self.metrics_bound = await self.metrics.start()
        except OSError:
            await self._close()
            raise
        core.on_swap(self._swapped)
        core.on_reload(self.reload)
        self.tasks.spawn(self._follow())
        self.tasks.spawn(self._write_loop())
        self.tasks.spawn(self._count_records())
        for target in self.notify_to:
            event = self._notify_events[target] = asyncio.Event()
            event.set()  # a restarted primary tells its secondaries at once
            self.tasks.spawn(self._notifier(target, event))
        await asyncio.to_thread(self._write)
        return self.bound

    async def _bind(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server = await asyncio.start_server(self._tcp_client, host, port, family=family,
                                            reuse_address=True)
        self._servers.append(server)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=(host, port), family=family)
        self._udp.append(transport)
        self.bound.append((host, port))

    def reload(self) -> None:
        """Apply a new configuration: the allowed networks at once; listen and NOTIFY
        addresses, zone and key only on restart (logged)."""
        config = self.core.config
        if self.zone is not None:
            self.primary = Primary(self.zone, config.rpz_allow_transfer, self.key)
        if config.rpz_listen != self.listen or list(config.rpz_notify) != self.notify_to:
            log.warning("reload: rpz listen and notify addresses change only on restart")
        self._changed.set()  # new policies may change the actions: recompute

    async def stop(self) -> None:
        await self.tasks.cancel_all()
        await self._close()
        if self.metrics is not None:
            await self.metrics.stop()
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self._write)

    async def _close(self) -> None:
        for transport in self._udp:
            transport.close()
        for server in self._servers:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        self._udp.clear()
        self._servers.clear()

    def describe(self) -> str:
        where = ", ".join(hostport(h, p) for h, p in self.bound)
        notify = ", ".join(hostport(h, p) for h, p in self.notify_to) or "none"
        assert self.zone is not None
        return (f"blockd rpz: listening on {where} (udp+tcp); zone {self.settings.apex}. "
                f"serial {self.zone.serial}; notify {notify}; journal seq "
                f"{self.core.index.seq}" + address_line(self.metrics_bound))

    # -- versions --------------------------------------------------------------------

    def _swapped(self, _index: BlockIndex) -> None:
        self._changed.set()

    async def _follow(self) -> None:
        """Install a new version after each swap (the difference computed off the loop),
        then wake the notifiers."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            zone = self.zone
            assert zone is not None
            try:
                change = await asyncio.to_thread(
                    zone.prepare, self.core.index, self.core.follower.head_hash)
                if change is None:
                    continue
                delta = zone.install(change, int(time.time()))
            except Exception:  # a failing round keeps the version in force
                log.exception("rpz: new version not installed")
                continue
            if delta is None:  # another change came first: compute again
                self._changed.set()
                continue
            log.info("rpz version serial=%s seq=%s removed=%s added=%s", delta.new_serial,
                     change.seq, len(delta.removed), len(delta.added))
            stats = self.stats
            if stats.records is not None:
                stats.records += len(delta.added) - len(delta.removed)
            stats.installed.append((delta.new_serial, time.time()))
            del stats.installed[:-HISTORY_TIMES]
            self._dirty = True
            for event in self._notify_events.values():
                event.set()

    async def _count_records(self) -> None:
        """Count the records of the version in force once (a pass over the slots, in a
        worker thread, after the start-up proof so as not to compete with it); from then
        on each installed difference keeps the count."""
        await self.core.verified()
        while True:
            zone = self.zone
            assert zone is not None
            version = zone.current
            count = await asyncio.to_thread(_records_of, version, zone.settings)
            if zone.current is version:  # else a newer version came meanwhile: again
                self.stats.records = count
                return

    # -- queries ---------------------------------------------------------------------

    def answer(self, data: bytes, host: str, tcp: bool) -> Reply:
        assert self.primary is not None
        reply = self.primary.answer(data, host, tcp)
        if reply.kind is not None:
            self._note(host, reply.kind, reply.serial)
        return reply

    def count(self, reply: Reply, aborted: bool = False) -> None:
        """A transfer query answered (``aborted``: the client left mid-transfer)."""
        if reply.transfer is not None and reply.outcome is not None:
            outcome = "aborted" if aborted and reply.outcome == "ok" else reply.outcome
            self.stats.transfers[(reply.transfer, outcome)] += 1

    def _note(self, host: str, kind: str, serial: int | None) -> None:
        entry = self.secondaries.setdefault(host, {})
        record = {"serial": serial, "at": _now_text()}
        if kind == "soa" or kind == "ixfr-none":
            entry["soa"] = record  # what it asked about: its serial is current
        if kind != "soa":
            entry["transfer"] = {**record, "kind": kind}
        self._dirty = True

    async def _tcp_client(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        """RFC 7766: length-prefixed queries, answered in order, closed when idle."""
        peer = writer.get_extra_info("peername")
        host = peer[0] if peer else ""
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
                (length,) = struct.unpack("!H", head)
                data = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE)
                reply = self.answer(data, host, tcp=True)
                try:
                    for message in reply.messages:
                        writer.write(struct.pack("!H", len(message)) + message)
                        await writer.drain()
                        await asyncio.sleep(0)  # a long transfer must not starve the loop
                except BaseException:
                    self.count(reply, aborted=True)
                    raise
                self.count(reply)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception:  # never let one client's trouble end the server
            log.exception("rpz: tcp client failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # -- NOTIFY ----------------------------------------------------------------------

    async def _notifier(self, target: Address, event: asyncio.Event) -> None:
        """NOTIFY ``target`` after every change; retried (1 s, 2 s, 4 s ...) until it
        answers, starting over when a newer version arrives meanwhile."""
        name = hostport(*target)
        while True:
            await event.wait()
            event.clear()
            zone = self.zone
            assert zone is not None
            serial = zone.serial
            wait = NOTIFY_FIRST_WAIT
            for attempt in range(1, NOTIFY_TRIES + 1):
                if event.is_set():
                    break  # a newer version: notify that instead
                ok = await self._notify_once(target, wait)
                self.stats.notify_failed += not ok
                self.notified[name] = {"serial": serial, "at": _now_text(), "acked": ok,
                                       "attempts": attempt}
                self._dirty = True
                if ok:
                    log.debug("rpz notify %s serial %s acknowledged", name, serial)
                    break
                wait *= 2
            else:
                log.warning("rpz notify %s serial %s: no answer after %d tries", name,
                            serial, NOTIFY_TRIES)

    async def _notify_once(self, target: Address, timeout: float) -> bool:
        assert self.zone is not None
        loop = asyncio.get_running_loop()
        wire, sent = notify_message(self.zone, random.randrange(65536), self.key)
        got: asyncio.Future[bool] = loop.create_future()
        key = self.key

        class Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
                if not got.done() and notify_acknowledged(sent, data, key):
                    got.set_result(True)

        family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
        try:
            transport, _ = await loop.create_datagram_endpoint(
                Proto, remote_addr=target, family=family)
        except OSError as exc:
            log.debug("rpz notify %s: %s", target, exc)
            await asyncio.sleep(timeout)
            return False
        try:
            transport.sendto(wire)
            self.stats.notify_sent += 1
            return await asyncio.wait_for(got, timeout)
        except (TimeoutError, OSError):
            return False
        finally:
            transport.close()

    # -- status file -----------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            await asyncio.sleep(WRITE_EVERY)
            if self._dirty:
                try:
                    await asyncio.to_thread(self._write)
                except OSError as exc:
                    log.warning("rpz: status not written to %s: %s", self.path, exc)

    def _write(self) -> None:
        """tmp + fsync + rename: a reader never sees half a file."""
        self._dirty = False
        zone = self.zone
        if zone is None:
            return
        data = {
            "zone": self.settings.apex + ".", "serial": zone.serial,
            "seq": zone.current.seq, "head_hash": zone.current.head_hash,
            "listen": [hostport(h, p) for h, p in self.bound],
            "written_at": _now_text(), "pid": os.getpid(),
            "secondaries": self.secondaries, "notify": self.notified,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)
