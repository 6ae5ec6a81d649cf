"""The control socket: how `blockd reload`, `blockd cache flush` and `blockd tail` talk
to running daemons.

One unix socket per daemon process in the state directory (``dns.sock``, ``dns.2.sock``,
``http.sock``, ``nft.sock``), readable and writable by its owner only (the `blockd`
user, and root). A client sends one JSON line, ``{"cmd": "reload"}``,
``{"cmd": "cache-flush", "name": "example.com"}`` or ``{"cmd": "tail"}``, and reads JSON
lines back: one answer, or (tail) a line per hit until it hangs up. No client address is
ever sent: a tail line names the channel, the order and the target.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from blockd.daemon.core import Core

log = logging.getLogger("blockd.control")

MAX_REQUEST = 4096
TAIL_QUEUE = 10_000  # lines kept for a slow reader; beyond, lines are dropped and counted
SOCKET_PATH_MAX = 107  # sun_path


def socket_path(state_dir: Path, instance: str) -> Path:
    return state_dir / f"{instance}.sock"


class ControlServer:
    """Answers control requests for one daemon process."""

    def __init__(self, core: Core, path: Path, reload: Callable[[], bool]) -> None:
        self.core = core
        self.path = path
        self.reload = reload
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> bool:
        """Listen; False (logged) if the path cannot hold a socket."""
        path = self.path
        if len(str(path)) > SOCKET_PATH_MAX:
            log.warning("no control socket: path too long for a unix socket: %s", path)
            return False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists() and stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()  # left by a daemon that was killed
            old = os.umask(0o177)
            try:
                self._server = await asyncio.start_unix_server(
                    self._client, path=str(path), limit=MAX_REQUEST)
            finally:
                os.umask(old)
            path.chmod(0o600)
        except OSError as exc:
            log.warning("no control socket at %s: %s", path, exc)
            return False
        return True

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            with contextlib.suppress(OSError):
                self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            request = json.loads(line or b"{}")
            command = request.get("cmd") if isinstance(request, dict) else None
            if command == "tail":
                await self._tail(reader, writer)
                return
            writer.write(json.dumps(self._answer(command, request)).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ValueError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _answer(self, command: object, request: dict[str, Any]) -> dict[str, Any]:
        core = self.core
        base = {"instance": core.instance, "seq": core.index.seq}
        if command == "reload":
            ok = self.reload()
            return {**base, "ok": ok, "seq": core.index.seq,
                    "error": None if ok else "configuration not reloaded: see the log"}
        if command == "cache-flush":
            name = request.get("name")
            if name is not None and not isinstance(name, str):
                return {**base, "ok": False, "error": "name must be a string"}
            removed = sum(flush(name) for flush in core.cache_flushers)
            return {**base, "ok": True, "removed": removed,
                    "caches": len(core.cache_flushers)}
        return {**base, "ok": False, "error": f"unknown command {command!r}"}

    async def _tail(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, str, str, str, int]] = asyncio.Queue(TAIL_QUEUE)
        hits = self.core.hits
        hits.watchers.append(queue)
        gone = asyncio.ensure_future(reader.read())  # EOF: the reader hung up
        try:
            writer.write(json.dumps({"instance": self.core.instance, "tail": True}).encode()
                         + b"\n")
            await writer.drain()
            while not gone.done():
                getting = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getting, gone},
                                             return_when=asyncio.FIRST_COMPLETED)
                if getting not in done:
                    getting.cancel()
                    break
                at, channel, reference, target, count = getting.result()
                writer.write(json.dumps({
                    "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
                    "instance": self.core.instance, "channel": channel, "order": reference,
                    "target": target, "count": count}).encode() + b"\n")
                await writer.drain()
        finally:
            hits.watchers.remove(queue)
            gone.cancel()
