"""Prometheus metrics for a daemon process, read from the counters its parts already keep.

The collector reads the stats objects at scrape time, so the hot path only increments
plain integers. Every daemon adds its groups to the core's collector; the metrics server
(a small aiohttp app on its own, loopback by default, address) serves ``/metrics`` and
``/healthz``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from aiohttp import web

    from blockd.daemon.core import Core

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StatsCollector(Collector):
    """The core's health and index figures, plus what each daemon registers: every int
    field of a stats dataclass as a counter, and gauges."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.counters: dict[str, Callable[[], Any]] = {}
        self.gauges: dict[str, Callable[[], float]] = {
            "blockd_hits_pending": lambda: float(sum(core.hits.pending.values())),
        }

    def add_counters(self, prefix: str, stats: Callable[[], Any]) -> None:
        """Export the int fields of ``stats()`` as ``{prefix}_{field}`` counters."""
        self.counters[prefix] = stats

    def add_gauge(self, name: str, value: Callable[[], float]) -> None:
        self.gauges[name] = value

    def collect(self) -> Iterator[Metric]:
        f = self.core.follower
        yield GaugeMetricFamily("blockd_store_healthy",
                                "1 if the order store was readable at the last poll; 0 while "
                                "the last good index is enforced without it",
                                value=1.0 if f.healthy else 0.0)
        yield CounterMetricFamily("blockd_store_errors", "Failed reads of the order store",
                                  value=f.stats.store_errors)
        yield GaugeMetricFamily("blockd_store_unproven",
                                "Differences between the order tables and the journal at the "
                                "last load (the index then comes from the journal alone)",
                                value=len(f.unproven))
        yield GaugeMetricFamily("blockd_store_refused",
                                "1 while the store's journal does not continue the one "
                                "enforced (replaced or restored, not adopted)",
                                value=1.0 if f.refused else 0.0)
        yield GaugeMetricFamily("blockd_store_damaged",
                                "1 if the last integrity check of the store found damage",
                                value=1.0 if f.damaged else 0.0)
        yield GaugeMetricFamily("blockd_policy_from_snapshot",
                                "1 while the policy in force was loaded from the snapshot on "
                                "disk, not from the store",
                                value=1.0 if f.origin == "snapshot" else 0.0)
        yield GaugeMetricFamily("blockd_index_journal_seq",
                                "Journal sequence number of the block index in force",
                                value=f.index.seq)
        yield GaugeMetricFamily("blockd_index_entries", "Targets in force in the block index",
                                value=f.index.size)
        yield GaugeMetricFamily("blockd_store_last_success_timestamp_seconds",
                                "When the store was last read successfully",
                                value=f.stats.last_success)
        yield CounterMetricFamily("blockd_hits_recorded", "Hits written to the store",
                                  value=self.core.hits.flushed)
        yield CounterMetricFamily("blockd_hits_write_failures",
                                  "Hit flushes that failed (the counts are kept)",
                                  value=self.core.hits.failures)
        for prefix, get in self.counters.items():
            stats = get()
            for field in fields(stats):
                value = getattr(stats, field.name)
                if isinstance(value, int) and not isinstance(value, bool):
                    yield CounterMetricFamily(f"{prefix}_{field.name}",
                                              f"{prefix} {field.name.replace('_', ' ')}",
                                              value=value)
        for name, fn in self.gauges.items():
            yield GaugeMetricFamily(name, name.replace("_", " "), value=fn())


class MetricsServer:
    """``/metrics`` and ``/healthz`` on one address (port 0: any free port)."""

    def __init__(self, collector: StatsCollector, host: str, port: int) -> None:
        self.collector = collector
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None

    async def start(self) -> tuple[str, int]:
        from aiohttp import web
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.collector)
        core = self.collector.core

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=generate_latest(registry),
                                headers={"Content-Type": CONTENT_TYPE})

        async def healthz(_: web.Request) -> web.Response:
            problem = core.follower.problem
            return web.Response(status=200 if problem is None else 503,
                                text=f"{problem or 'ok'}\n")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        server = getattr(site, "_server", None)
        for sock in getattr(server, "sockets", None) or []:
            self.port = int(sock.getsockname()[1])
            break
        return self.host, self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
