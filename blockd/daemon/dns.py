"""The resolver as a handle: ``DnsDaemon(core).start()`` binds and answers until stop().

Builds the sans-I/O :class:`~blockd.dns.service.DnsService` on the core's live index and
hit counter, puts the UDP/TCP transports of :mod:`blockd.dns.server` around it, and the
metrics server beside it when ``[dns] metrics`` is set. With ``--workers N`` only worker 0
serves metrics, for every worker: the others publish theirs to files it merges
(:class:`~blockd.daemon.metrics.WorkerFiles`).
"""

from __future__ import annotations

import asyncio
import logging

from blockd.config import Address
from blockd.daemon.core import Core
from blockd.daemon.metrics import (
    MetricsServer,
    WorkerFiles,
    address_line,
    dns_group,
    publish,
    registry_for,
)
from blockd.daemon.tasks import cancel
from blockd.dns.admission import Acl, RateLimiter
from blockd.dns.answers import BlockedAnswers
from blockd.dns.server import DnsServer
from blockd.dns.service import DnsService
from blockd.dns.upstream import Upstreams

log = logging.getLogger("blockd.dns")


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class DnsDaemon:
    """``blockd serve dns`` on a core; ``reuse_port`` for workers sharing the ports;
    ``worker`` of ``workers`` says which process of ``--workers N`` this is."""

    name = "dns"

    def __init__(self, core: Core, *, reuse_port: bool = False, worker: int = 0,
                 workers: int = 1) -> None:
        self.core = core
        config = core.config
        settings = config.dns
        self.settings = settings
        self.answers = BlockedAnswers(dict(core.enforcement), config.notice_ipv4,
                                      config.notice_ipv6, config.notice_url, 0)
        self.upstreams = Upstreams(settings.upstream, timeout=settings.upstream_timeout,
                                   max_inflight=settings.max_inflight)
        follower = core.follower  # read on every query: one attribute hop, not two
        self.service = DnsService(lambda: follower.index, self.answers, settings,
                                  self.upstreams, core.hits.channel("dns"))
        self.server = DnsServer(self.service, settings.listen,
                                idle_timeout=settings.tcp_idle_timeout, reuse_port=reuse_port)
        files = (WorkerFiles(config.state_path(), "dns", worker, workers)
                 if workers > 1 and settings.metrics is not None else None)
        self.files = files if worker > 0 else None  # published by this worker
        self.metrics = (MetricsServer(core.metrics, *settings.metrics, peers=files)
                        if worker == 0 and settings.metrics is not None else None)
        self._publishing: asyncio.Task[None] | None = None
        self.bound: list[Address] = []
        self.metrics_bound: Address | None = None

    async def start(self) -> list[Address]:
        """Start the core if needed, bind every listen address; the bound (host, port)s."""
        core = self.core
        await core.start()
        self.answers.clear(core.index.seq)
        core.on_swap(lambda index: self.answers.clear(index.seq))
        core.on_reload(self.reload)
        self._policy_counters()
        core.metrics.add("dns", dns_group(self.service, self.upstreams))
        self.bound = await self.server.start()
        core.enforcing("dns")
        core.cache_flushers.append(self.service.flush)
        if self.files is not None:
            self._publishing = asyncio.get_running_loop().create_task(
                publish(self.files, registry_for(core.metrics)))
        if self.metrics is not None:
            try:
                self.metrics_bound = await self.metrics.start()
            except OSError:
                await self.server.stop()
                raise
        return self.bound

    def reload(self) -> None:
        """Apply a new configuration: policies, ACL, rate limit, upstreams (not listen)."""
        core, s = self.core, self.core.config.dns
        self.answers.policies = dict(core.enforcement)
        self.answers.clear(core.index.seq)
        self.service.acl = Acl(s.allow)
        self.service.limiter = RateLimiter(s.rate_limit, s.rate_burst, self.service.clock)
        self.upstreams.servers = list(s.upstream)
        self.service.forget()
        self._policy_counters()
        if s.listen != self.settings.listen:
            log.warning("reload: listen addresses change only on restart")

    def _policy_counters(self) -> None:
        """A blocked-answer counter for every enforcement policy from the start: a series
        that appears only at its first increment loses that increment to rate()."""
        for name in self.core.enforcement:
            self.service.stats.cell(name)

    async def stop(self) -> None:
        await self.server.stop()
        if self.metrics is not None:
            await self.metrics.stop()
        if self.files is not None:
            await cancel(self._publishing)
            self.files.remove_own()

    def describe(self) -> str:
        """The one status line printed at start (tests and operators read it)."""
        where = ", ".join(hostport(h, p) for h, p in self.bound)
        up = ", ".join(hostport(h, p) for h, p in self.settings.upstream)
        line = (f"blockd dns: listening on {where} (udp+tcp); upstream {up}; journal seq "
                f"{self.core.index.seq}")
        return line + address_line(self.metrics_bound)
