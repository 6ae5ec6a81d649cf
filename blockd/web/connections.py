"""Every open connection of the notice server, so idle ones cannot exhaust it.

Caps per client address and in total (below the process's file limit), one idle timeout
for every connection that is waiting for a request (before the first one and between
keep-alive requests, on the fast path and after a hand-over to aiohttp alike), and when
the server is full, the connection idle the longest is closed to make room: an attacker
holding thousands of idle sockets cannot keep a subscriber's browser out. Shedding is
logged at most once a minute. Bookkeeping is O(1) per event; expiry is swept once a second.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("blockd.http")

RESERVED_FILES = 128  # descriptors kept for the store, logs, listeners and upstreams
IDLE_TIMEOUT = 5.0  # seconds a connection may wait for (the next) request
LOG_EVERY = 60.0


def file_limit() -> int:
    """The soft limit on open files of this process."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class ConnectionStats:
    accepted: int = 0
    shed_per_client: int = 0
    shed_full: int = 0
    idle_closed: int = 0


class Conn:
    """One tracked connection: its peer and a way to close it."""

    __slots__ = ("close", "counted", "peer")

    def __init__(self, peer: str, close: Callable[[], None]) -> None:
        self.peer = peer
        self.close = close
        self.counted = True


class Connections:
    def __init__(self, max_total: int | None = None, max_per_client: int | None = None,
                 idle_timeout: float = IDLE_TIMEOUT,
                 clock: Callable[[], float] | None = None) -> None:
        total = max_total if max_total is not None else max(64, file_limit() - RESERVED_FILES)
        self.max_total = total
        # a CGNAT address can stand for many subscribers: an eighth of the total each
        self.max_per_client = max_per_client if max_per_client is not None else max(16,
                                                                                      total // 8)
        self.idle_timeout = idle_timeout
        self.clock = clock or (lambda: asyncio.get_running_loop().time())
        self.stats = ConnectionStats()
        self.per_client: Counter[str] = Counter()
        self.open = 0
        self._idle: dict[Conn, float] = {}  # insertion order = oldest idle first
        self._shed_since_log = 0
        self._last_log = float("-inf")
        self._sweeper: asyncio.TimerHandle | None = None

    # -- events from the protocols -----------------------------------------------------

    def admit(self, peer: str, close: Callable[[], None]) -> Conn | None:
        """A new connection: its handle, or None if it must be closed at once."""
        if self.per_client[peer] >= self.max_per_client:
            self.stats.shed_per_client += 1
            self._shed()
            return None
        if self.open >= self.max_total and not self._evict_oldest_idle():
            self.stats.shed_full += 1
            self._shed()
            return None
        conn = Conn(peer, close)
        self.open += 1
        self.per_client[peer] += 1
        self.stats.accepted += 1
        self._idle[conn] = self.clock()
        return conn

    def busy(self, conn: Conn) -> None:
        """A request is arriving or being answered: not idle."""
        self._idle.pop(conn, None)

    def idle(self, conn: Conn) -> None:
        """Answered; waiting for the next request (the idle clock starts again)."""
        self._idle.pop(conn, None)
        self._idle[conn] = self.clock()

    def gone(self, conn: Conn) -> None:
        """Closed, by either side (counted once however often it is reported)."""
        self._idle.pop(conn, None)
        if not conn.counted:
            return
        conn.counted = False
        self.open -= 1
        self.per_client[conn.peer] -= 1
        if self.per_client[conn.peer] <= 0:
            del self.per_client[conn.peer]

    # -- housekeeping -------------------------------------------------------------------

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().call_later(1.0, self._sweep)

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _sweep(self) -> None:
        """Close the connections idle for longer than the timeout (oldest first)."""
        deadline = self.clock() - self.idle_timeout
        expired = []
        for conn, since in self._idle.items():
            if since > deadline:
                break
            expired.append(conn)
        for conn in expired:
            self._idle.pop(conn, None)
            self.stats.idle_closed += 1
            conn.close()
        self._sweeper = asyncio.get_running_loop().call_later(1.0, self._sweep)

    def _evict_oldest_idle(self) -> bool:
        for conn in self._idle:
            self._idle.pop(conn)
            self.stats.shed_full += 1
            self._shed()
            conn.close()
            return True
        return False

    def _shed(self) -> None:
        self._shed_since_log += 1
        now = self.clock()
        if now - self._last_log >= LOG_EVERY:
            log.warning("notice server full: shedding connections (%d since the last report;"
                        " %d open, at most %d, %d per client address)", self._shed_since_log,
                        self.open, self.max_total, self.max_per_client)
            self._last_log = now
            self._shed_since_log = 0
