"""Run a core and daemon handles in-process, on an event loop in a thread.

For tests and embedding: ``with Controller(config, lambda core: [DnsDaemon(core)]) as c:``
binds (port 0 gives a free port), and ``c.bound`` says where. The handles are the ones
``blockd serve`` runs; only the process concerns (signals, workers, uvloop) are left out.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import TypeVar

from blockd.config import Address, Config
from blockd.core.enforcement import EnforcementPolicy
from blockd.daemon.core import Core
from blockd.daemon.process import Daemon
from blockd.store.follow import Clock, utcnow

T = TypeVar("T")


class Controller:
    def __init__(self, config: Config, build: Callable[[Core], Sequence[Daemon]], *,
                 enforcement: Mapping[str, EnforcementPolicy] | None = None,
                 clock: Clock = utcnow, instance: str = "controller") -> None:
        self.config = config
        self.instance = instance
        self.build = build
        self.enforcement = enforcement
        self.clock = clock
        self.loop = asyncio.new_event_loop()
        self.core: Core | None = None
        self.daemons: list[Daemon] = []
        self.bound: dict[str, list[Address]] = {}
        self._thread = threading.Thread(target=self.loop.run_forever, name="blockd-controller",
                                        daemon=True)

    @property
    def running(self) -> bool:
        """True while the loop thread serves (a crash in a handle would end it)."""
        return self._thread.is_alive() and self.loop.is_running()

    def call(self, make: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
        """Run ``make()`` on the daemon's loop and wait for its result."""
        async def wrapped() -> T:
            return await make()

        future: Future[T] = asyncio.run_coroutine_threadsafe(wrapped(), self.loop)
        return future.result(timeout)

    def start(self) -> dict[str, list[Address]]:
        """Start the core and every handle; raises what a start raised (nothing left
        running)."""
        self._thread.start()
        try:
            self.call(self._start)
        except BaseException:
            self.stop()
            raise
        return self.bound

    async def _start(self) -> None:
        self.core = Core(self.config, self.enforcement, clock=self.clock,
                         instance=self.instance)
        for daemon in self.build(self.core):
            self.bound[daemon.name] = await daemon.start()
            self.daemons.append(daemon)

    def reload(self, config: Config,
               enforcement: Mapping[str, EnforcementPolicy] | None = None) -> None:
        """What SIGHUP does, with the given configuration."""
        from blockd.config import load_policies

        pols = enforcement if enforcement is not None else load_policies(config.policy_dirs)

        async def run() -> None:
            assert self.core is not None
            self.core.reload(config, pols)

        self.call(run)

    def poll(self) -> bool:
        """Follow the journal and the clock now instead of waiting for the next poll."""
        assert self.core is not None
        return self.call(self.core.poll)

    def stop(self) -> None:
        """Stop the handles and the core (hits flushed), then the loop and its thread."""
        if self._thread.is_alive():
            self.call(self._stop)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        if not self.loop.is_running():
            self.loop.close()

    async def _stop(self) -> None:
        for daemon in reversed(self.daemons):
            await daemon.stop()
        self.daemons.clear()
        if self.core is not None:
            await self.core.stop()

    def __enter__(self) -> Controller:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


