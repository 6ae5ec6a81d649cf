"""The process around the daemon handles: logging, uvloop, signals and ``--workers``.

``run`` builds one :class:`~blockd.daemon.core.Core` per process, starts the handles the
command asked for on it, prints one status line per handle (one write each: workers share
stdout), and waits: SIGTERM/SIGINT stop gracefully (hits flushed), SIGHUP re-reads the
configuration and the enforcement policies (a broken file is logged and the running
configuration kept). With ``workers > 1`` it forks that many processes, each with its own
core, sharing the listening ports through SO_REUSEPORT. Under systemd each process reports
through :mod:`blockd.daemon.notify` (READY once serving, STATUS with the journal seq in
force, WATCHDOG from the event loop, RELOADING around SIGHUP, STOPPING).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Protocol

from blockd.config import Address, Config, load_policies
from blockd.core.model import BlockdError
from blockd.daemon import logs
from blockd.daemon.control import ControlServer, socket_path
from blockd.daemon.core import Core
from blockd.daemon.notify import Notifier

log = logging.getLogger("blockd")


class Daemon(Protocol):
    """A daemon handle on a core: start() binds and returns the bound addresses."""

    name: str

    async def start(self) -> list[Address]: ...
    def reload(self) -> None: ...
    async def stop(self) -> None: ...
    def describe(self) -> str: ...


Build = Callable[[Core, int], Sequence[Daemon]]  # (core, worker index) -> handles


_verbose = False


def setup_logging(verbose: bool = False, level: str = "info") -> None:
    """``key=value`` lines on stderr (daemon/logs.py); ``--verbose`` means debug."""
    global _verbose
    _verbose = _verbose or verbose
    logs.setup("debug" if _verbose else level)


def install_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    uvloop.install()
    return True


def raise_file_limit() -> int:
    """Raise the soft limit on open files to the hard one (idle-connection floods and
    many TCP clients need descriptors); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("open files limit stays at %d: %s", soft, exc)
    return soft


def reload_core(core: Core, make_config: Callable[[], Config]) -> bool:
    """Re-read the configuration and policies into ``core``; False (logged) if broken."""
    try:
        fresh = make_config()
        enforcement = load_policies(fresh.policy_dirs)
    except BlockdError as exc:
        log.error("SIGHUP: configuration not reloaded: %s", exc)
        core.reload_errors += 1  # blockd_reload_errors_total
        return False
    core.reload(fresh, enforcement)
    log.info("SIGHUP: configuration reloaded")
    return True


def status_line(core: Core) -> str:
    """What ``systemctl status`` shows: the policy in force and whether it is healthy."""
    index = core.index
    text = f"enforcing journal seq {index.seq}, {index.size} targets in force"
    problem = core.follower.problem
    return text if problem is None else f"{text}; UNHEALTHY: {problem}"


async def report_status(core: Core, notifier: Notifier, every: float = 1.0) -> None:
    """Send STATUS= whenever it changes (checked every second)."""
    last = ""
    while True:
        await asyncio.sleep(every)
        text = status_line(core)
        if text != last:
            notifier.status(text)
            last = text


async def serve(config: Config, make_config: Callable[[], Config], build: Build,
                worker: int = 0, instance: str = "blockd") -> None:
    """Start the handles on one core and run until SIGTERM/SIGINT. ``instance`` names
    the process's snapshot of the policy (a worker's gets its number: ``dns.2``)."""
    core = Core(config, instance=instance if worker == 0 else f"{instance}.{worker + 1}")
    logs.follow_seq(lambda: core.follower.index.seq)
    notifier = Notifier()
    started: list[Daemon] = []
    # handlers first: a SIGTERM right after the status line must still stop gracefully
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    def hup() -> None:
        notifier.reloading()
        reload_core(core, make_config)
        notifier.ready(status_line(core))

    loop.add_signal_handler(signal.SIGHUP, hup)

    def reload_now() -> bool:  # `blockd reload`, through the control socket
        notifier.reloading()
        ok = reload_core(core, make_config)
        notifier.ready(status_line(core))
        return ok

    control = ControlServer(core, socket_path(config.state_path(), core.instance),
                            reload_now)
    try:
        for daemon in build(core, worker):
            await daemon.start()
            started.append(daemon)
            sys.stdout.write(daemon.describe() + "\n")
            sys.stdout.flush()
        await control.start()
        if worker == 0:  # the first worker speaks for the unit; every worker pings
            notifier.ready(status_line(core))
            core.tasks.spawn(report_status(core, notifier))
        core.tasks.spawn(notifier.keepalive())
        await stop.wait()
        log.info("stopping")
        notifier.stopping()
    finally:
        await control.stop()
        for daemon in reversed(started):
            await daemon.stop()
        await core.stop()
        notifier.close()


def run(make_config: Callable[[], Config], build: Build, *, workers: int = 1,
        uvloop: bool = True, instance: str = "blockd") -> int:
    """Run in this process, or fork ``workers`` processes sharing the ports.

    ``make_config`` loads the file and applies command-line overrides; SIGHUP calls it
    again. The exit status is 0 after a graceful stop, else the first failing worker's.
    """
    if uvloop:
        install_uvloop()
    raise_file_limit()
    config = make_config()
    setup_logging(level=config.log_level)  # the configured level, unless --verbose
    if workers <= 1:
        asyncio.run(serve(config, make_config, build, instance=instance))
        return 0
    children: list[int] = []
    for index in range(workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                asyncio.run(serve(config, make_config, build, index, instance))
                code = 0
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        status = status or os.waitstatus_to_exitcode(code)
    return status
