"""Tell systemd how the daemon is doing (``Type=notify``): READY, STATUS, WATCHDOG,
RELOADING and STOPPING, over the datagram socket systemd names in ``$NOTIFY_SOCKET``.

The protocol is a few lines (sd_notify(3)): one datagram of ``KEY=VALUE`` lines to a
unix socket, abstract when the name starts with ``@``. Outside systemd (no
``NOTIFY_SOCKET``) every call does nothing. WATCHDOG=1 is sent from a task on the event
loop, so a wedged loop stops the pings and systemd restarts the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time

log = logging.getLogger("blockd")


class Notifier:
    """sd_notify for one process (a ``--workers`` child reports as itself: the units
    set ``NotifyAccess=all``)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if path.startswith("@"):
            self.address = b"\0" + path[1:].encode()
        elif path.startswith("/"):
            self.address = path
        self.watchdog: float | None = None  # seconds between pings systemd expects
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = {str(os.getpid()), str(os.getppid())}  # the main process or its worker
        if usec.isdigit() and int(usec) > 0 and (not pid or pid in mine):
            self.watchdog = int(usec) / 1e6
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> None:
        """One message; keys as sd_notify spells them (``READY=1`` is ``READY=1``)."""
        if self.address is None:
            return
        text = "\n".join(f"{key}={value}" for key, value in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX,
                                           socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(text.encode(), self.address)
        except OSError as exc:  # systemd gone or socket full: the daemon goes on serving
            log.warning("sd_notify not sent (%s): %s", text.replace("\n", " "), exc)

    def ready(self, status: str) -> None:
        self.send(READY=1, STATUS=status)

    def status(self, status: str) -> None:
        self.send(STATUS=status)

    def reloading(self) -> None:
        self.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                  // 1000)

    def stopping(self) -> None:
        self.send(STOPPING=1)

    async def keepalive(self) -> None:
        """Ping the watchdog at half its interval, from the event loop (run as a task)."""
        if self.watchdog is None or self.address is None:
            return
        while True:
            self.send(WATCHDOG=1)
            await asyncio.sleep(self.watchdog / 2)

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
