"""Prometheus metrics for the daemons, read from the counters they already keep.

A collector reads the stats objects at scrape time, so the hot path only increments plain
integers. Served by a small aiohttp app on a separate (loopback by default) address.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from blockd.store.follow import IndexFollower

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StatsCollector(Collector):
    """Exports every int field of the given stats objects as a counter, plus gauges."""

    def __init__(self, prefix: str, follower: IndexFollower,
                 counters: dict[str, Callable[[], Any]],
                 gauges: dict[str, Callable[[], float]]) -> None:
        self.prefix = prefix
        self.follower = follower
        self.counters = counters
        self.gauges = gauges

    def collect(self) -> Iterator[Metric]:
        f = self.follower
        yield GaugeMetricFamily("blockd_store_healthy",
                                "1 if the order store was readable at the last poll; 0 while "
                                "the last good policy is enforced without it",
                                value=1.0 if f.healthy else 0.0)
        yield CounterMetricFamily("blockd_store_errors", "Failed reads of the order store",
                                  value=f.stats.store_errors)
        yield GaugeMetricFamily("blockd_policy_journal_seq",
                                "Journal sequence number of the policy in force",
                                value=f.index.seq)
        yield GaugeMetricFamily("blockd_policy_entries", "Targets in force in the policy",
                                value=f.index.size)
        yield GaugeMetricFamily("blockd_store_last_success_timestamp_seconds",
                                "When the store was last read successfully",
                                value=f.stats.last_success)
        for group, get in self.counters.items():
            stats = get()
            for field in fields(stats):
                value = getattr(stats, field.name)
                if isinstance(value, int) and not isinstance(value, bool):
                    yield CounterMetricFamily(f"{self.prefix}_{group}_{field.name}",
                                              f"{group} {field.name.replace('_', ' ')}",
                                              value=value)
        for name, fn in self.gauges.items():
            yield GaugeMetricFamily(f"{self.prefix}_{name}", name.replace("_", " "), value=fn())


def metrics_app(collector: StatsCollector) -> web.Application:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type":
                                                                        CONTENT_TYPE})

    async def healthz(_: web.Request) -> web.Response:
        healthy = collector.follower.healthy
        return web.Response(status=200 if healthy else 503,
                            text="ok\n" if healthy else "store unreadable: enforcing last "
                                                         "good policy\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


async def start_metrics(collector: StatsCollector, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(metrics_app(collector), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
