"""The notice server as a handle: ``HttpDaemon(core).start()`` binds and serves 451 pages.

Builds the :class:`~blockd.web.app.NoticeSite` (decides and renders) on the core's live
index, policies, hit counter and store lookup, and puts the byte-moving servers of
:mod:`blockd.web.server` around it (plain HTTP, and TLS for the ISP's own notice host),
and the metrics server beside it when ``[notice] metrics`` is set.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

from blockd.config import Address, Config
from blockd.core.enforcement import EnforcementPolicy
from blockd.core.model import BlockdError
from blockd.daemon.core import Core
from blockd.daemon.dns import hostport
from blockd.daemon.metrics import MetricsServer, address_line, http_group
from blockd.dns.chains import CnameChains
from blockd.dns.upstream import Upstreams
from blockd.web.app import NoticeSettings, NoticeSite
from blockd.web.server import NoticeServer


def notice_settings(config: Config, enforcement: Mapping[str, EnforcementPolicy]
                    ) -> NoticeSettings:
    return NoticeSettings(
        notice_url=config.notice_url, isp_name=config.isp_name,
        isp_contact=config.isp_contact, transparency=config.transparency,
        retry_after=max((p.dns_ttl for p in enforcement.values()), default=30))


def tls_endpoint(config: Config) -> tuple[Address, ssl.SSLContext] | None:
    """The TLS listener and its context, or None; a one-line error if it cannot load."""
    if config.tls_listen is None:
        return None
    if config.tls_cert is None or config.tls_key is None:
        raise BlockdError("notice.tls_listen needs notice.tls_cert and notice.tls_key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise BlockdError(f"notice.tls_cert/tls_key: cannot load: {exc}") from None
    return config.tls_listen, context


class HttpDaemon:
    """``blockd serve http`` on a core."""

    name = "http"

    def __init__(self, core: Core, *, metrics: bool = True) -> None:
        self.core = core
        config = core.config
        cnames = None
        if config.notice_resolve_cnames:  # ask the resolver's upstreams, as it would
            cnames = CnameChains(Upstreams(config.dns.upstream,
                                           timeout=config.dns.upstream_timeout))
        self.site = NoticeSite(
            lambda: core.index, core.enforcement,
            tuple(d / "notices" for d in config.policy_dirs),
            notice_settings(config, core.enforcement), hits=core.hits.channel("http"),
            past=core.store, healthy=lambda: core.healthy, cnames=cnames)
        self.server = NoticeServer(self.site, config.notice_listen, tls_endpoint(config))
        self.metrics = (MetricsServer(core.metrics, *config.notice_metrics)
                        if metrics and config.notice_metrics is not None else None)
        self.bound: list[tuple[str, int, bool]] = []
        self.metrics_bound: Address | None = None

    async def start(self) -> list[Address]:
        await self.core.start()
        self.core.on_reload(self.reload)
        server = self.server
        self.core.metrics.add("http", http_group(self.site, lambda: server.connections))
        self.bound = await server.start()
        self.core.enforcing("http")
        if self.metrics is not None:
            try:
                self.metrics_bound = await self.metrics.start()
            except OSError:
                await server.stop()
                raise
        return [(h, p) for h, p, _ in self.bound]

    def reload(self) -> None:
        """New policies, texts and settings; listen addresses need a restart."""
        core = self.core
        self.site.enforcement = core.enforcement
        self.site.settings = notice_settings(core.config, core.enforcement)
        self.site.forget()

    async def stop(self) -> None:
        await self.server.stop()
        if self.metrics is not None:
            await self.metrics.stop()

    def describe(self) -> str:
        where = ", ".join(f"{'https' if t else 'http'}://{hostport(h, p)}/"
                          for h, p, t in self.bound)
        return (f"blockd http: listening on {where}; journal seq {self.core.index.seq}"
                + address_line(self.metrics_bound))
