"""Prometheus metrics for a daemon process, read from the counters its parts already keep.

The hot paths only increment plain ints in stats dataclasses (``DnsStats``,
``UpstreamStats``, ``SiteStats``, ``ConnectionStats``, ``ReconcileStats``, the follower's
and the hit counter's); the :class:`StatsCollector` reads them at scrape time and turns
them into metric families that follow Prometheus naming: units in the names (``_seconds``,
``_bytes``), ``_total`` on counters, and one family with a low-cardinality label where
there are several outcomes of one thing (``blockd_dns_queries_total{result=...}``, not a
metric per outcome). The label values are fixed sets, or the enforcement policies'
names, or the nft set names: never a client, a name or an order.

Every daemon registers its group with the core's collector when it starts; the metrics
server (a small aiohttp app on an address of its own, off unless configured) serves
``/metrics`` with the collector, prometheus_client's process and platform collectors
(``process_*``, ``python_info``) and ``/healthz``.

Workers (``blockd serve dns --workers N``): the N processes share the DNS port through
SO_REUSEPORT, but a metrics port shared that way would hand each scrape to a random
worker, and one port per worker would make the operator configure N targets. So worker 0
serves ``/metrics`` for all of them: every other worker writes its own exposition to a file
of a per-run directory under the state directory once a second (written to a temporary
file and renamed: a reader never sees half of one), and worker 0, at each scrape, merges
its own families with the files' (parsed with prometheus_client's parser), every sample
labelled ``worker="N"``. A file older than a few seconds is a dead or wedged worker's and
is left out. No sockets between the processes, nothing shared in memory, and a worker
that dies takes nothing with it; the price is that the other workers' figures are up to a
second old, which is below any scrape interval.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from aiohttp import web

    from blockd.daemon.core import Core
    from blockd.daemon.rpz import RpzDaemon
    from blockd.dns.service import DnsService
    from blockd.dns.upstream import Upstreams
    from blockd.nft.reconcile import Reconciler
    from blockd.web.app import NoticeSite
    from blockd.web.connections import Connections

log = logging.getLogger("blockd")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PUBLISH_INTERVAL = 1.0  # seconds between a worker's writes of its exposition
STALE_AFTER = 5.0  # seconds after which a worker's file is taken for a dead worker's

Group = Callable[[], Iterable[Metric]]


def _version() -> str:
    try:
        return metadata.version("blockd")
    except metadata.PackageNotFoundError:
        return "unknown"


VERSION = _version()


# -- building families ------------------------------------------------------------------


def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


_F = TypeVar("_F", CounterMetricFamily, GaugeMetricFamily)


def _labelled(family: _F, values: Mapping[str, float]) -> _F:
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def labelled_counter(name: str, doc: str, label: str,
                     values: Mapping[str, float]) -> CounterMetricFamily:
    return _labelled(CounterMetricFamily(name, doc, labels=[label]), values)


def labelled_gauge(name: str, doc: str, label: str,
                   values: Mapping[str, float]) -> GaugeMetricFamily:
    return _labelled(GaugeMetricFamily(name, doc, labels=[label]), values)


def histogram(name: str, doc: str, bounds: Iterable[float], counts: list[int],
              total: float) -> HistogramMetricFamily:
    """A histogram from per-bucket (not cumulative) counts, the last one for +Inf."""
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip([*(str(b) for b in bounds), "+Inf"], counts, strict=True):
        running += count
        buckets.append((bound, running))
    family = HistogramMetricFamily(name, doc, labels=[])
    family.add_metric([], buckets, sum_value=total)
    return family


# -- the collector ----------------------------------------------------------------------


class StatsCollector(Collector):
    """The core's families (build, policy, store, reloads, hits), plus the groups each
    daemon adds when it starts."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.groups: dict[str, Group] = {}

    def add(self, name: str, group: Group) -> None:
        """Add (or replace: a handle started twice) a daemon's families."""
        self.groups[name] = group

    def collect(self) -> Iterator[Metric]:
        yield from self._core()
        for group in self.groups.values():
            yield from group()

    def _core(self) -> Iterator[Metric]:
        core = self.core
        f = core.follower
        info = GaugeMetricFamily("blockd_build_info", "The blockd version running (1)",
                                 labels=["version"])
        info.add_metric([VERSION], 1.0)
        yield info
        yield gauge("blockd_store_healthy",
                    "1 if the order store was readable and followed at the last poll; 0 "
                    "while the last good policy is enforced without it", 1.0 if f.healthy else 0.0)
        yield counter("blockd_store_errors", "Failed or refused polls of the order store",
                      f.stats.store_errors)
        if core.listening is not None:  # PostgreSQL only
            yield gauge("blockd_store_listening",
                        "1 while a LISTEN for journal notifications is in place (PostgreSQL;"
                        " 0: following by polling alone)", 1.0 if core.listening else 0.0)
        yield gauge("blockd_store_unproven",
                    "Differences between the order tables and the journal at the last "
                    "load (the index then comes from the journal alone)", len(f.unproven))
        yield gauge("blockd_store_refused",
                    "1 while the store's journal does not continue the one enforced "
                    "(replaced or restored, not adopted)", 1.0 if f.refused else 0.0)
        yield gauge("blockd_store_damaged",
                    "1 if the last integrity check of the store found damage",
                    1.0 if f.damaged else 0.0)
        yield gauge("blockd_store_last_success_timestamp_seconds",
                    "When the store was last read successfully (Unix time; 0: never)",
                    f.stats.last_success)
        yield counter("blockd_store_integrity_checks", "Integrity checks of the store run",
                      f.stats.integrity_checks)
        yield gauge("blockd_policy_from_snapshot",
                    "1 while the policy in force was loaded from the snapshot on disk, "
                    "not from the store", 1.0 if f.origin == "snapshot" else 0.0)
        yield gauge("blockd_policy_journal_seq",
                    "Journal sequence number of the policy (block index) in force", f.index.seq)
        yield gauge("blockd_policy_entries", "Targets in force in the block index",
                    f.index.size)
        last = f.stats.last_success
        yield gauge("blockd_policy_age_seconds",
                    "Seconds since the policy in force was last confirmed current against "
                    "the store (+Inf if it never was: served from the snapshot)",
                    time.time() - last if last else math.inf)
        yield counter("blockd_policy_swaps", "New block indexes put in force", f.stats.swaps)
        yield counter("blockd_snapshot_writes", "Snapshots of the policy written",
                      f.stats.snapshots_written)
        yield counter("blockd_snapshot_write_failures", "Snapshots of the policy not written",
                      f.stats.snapshot_failures)
        yield counter("blockd_reloads", "Configuration reloads applied (SIGHUP)", core.reloads)
        yield counter("blockd_reload_errors",
                      "Configuration reloads refused: a broken file (the running "
                      "configuration was kept)", core.reload_errors)
        hits = core.hits
        yield counter("blockd_hits_recorded", "Hits written to the store", hits.flushed)
        yield counter("blockd_hits_write_failures",
                      "Hit flushes that failed (the counts are kept)", hits.failures)
        yield gauge("blockd_hits_pending", "Hits counted, not yet written to the store",
                    float(sum(entry[0] for entry in hits.entries.values())))


# -- each daemon's group ----------------------------------------------------------------


def dns_group(service: DnsService, upstreams: Upstreams) -> Group:
    """The resolver: queries by result, blocked answers by policy, cache, upstreams.

    No cache hit ratio gauge: a ratio cannot be summed over workers or averaged over time
    correctly; the dashboard computes it from ``blockd_dns_queries_total``.
    """
    from blockd.dns.upstream import DURATION_BUCKETS

    def collect() -> Iterator[Metric]:
        stats, up, cache = service.stats, upstreams.stats, service.cache
        yield labelled_counter(
            "blockd_dns_queries", "DNS queries by the one result each got", "result",
            stats.results())
        yield labelled_counter(
            "blockd_dns_blocked", "Blocked answers by the enforcement policy of the order",
            "policy", dict(stats.blocked_by_policy))
        yield gauge("blockd_dns_cache_entries", "Answers in the cache", float(len(cache)))
        yield gauge("blockd_dns_cache_bytes", "Bytes of the answers in the cache",
                    float(cache.bytes))
        yield counter("blockd_dns_upstream_queries",
                      "Exchanges with an upstream server (each server tried counts)",
                      up.queries)
        yield labelled_counter(
            "blockd_dns_upstream_errors",
            "Upstream problems: timeout, error, mismatched (an answer that did not match "
            "the query, ignored) per exchange; failure (every server failed) and busy "
            "(too many in flight) per query", "kind",
            {"timeout": up.timeouts, "error": up.errors, "mismatched": up.mismatched,
             "failure": up.failures, "busy": up.busy})
        yield counter("blockd_dns_upstream_tcp_retries",
                      "Truncated upstream answers asked again over TCP", up.tcp_retries)
        yield histogram("blockd_dns_upstream_duration_seconds",
                        "Duration of one exchange with an upstream server",
                        DURATION_BUCKETS, list(up.duration_counts), up.duration_sum)
        yield gauge("blockd_dns_upstream_inflight", "Distinct upstream queries in flight",
                    float(upstreams.inflight))

    return collect


def http_group(site: NoticeSite, connections: Callable[[], Connections | None]) -> Group:
    """The notice server: responses by status and path, connections."""
    from blockd.web.server import bad_requests

    def collect() -> Iterator[Metric]:
        s = site.stats
        pages = CounterMetricFamily(
            "blockd_http_responses",
            "Responses of the notice site by HTTP status (451: a notice) and path (fast: "
            "a plain GET/HEAD answered from cached bytes; aiohttp: everything else)",
            labels=["code", "path"])
        pages.add_metric(["451", "fast"], s.notices_fast)
        for code, value in s.codes().items():
            pages.add_metric([code, "aiohttp"], value)
        yield pages
        yield counter("blockd_http_bad_requests",
                      "Malformed requests answered 400/431 by aiohttp", bad_requests())
        conns = connections()
        if conns is None:
            return
        c = conns.stats
        yield counter("blockd_http_connections_accepted", "Connections admitted", c.accepted)
        yield labelled_counter(
            "blockd_http_connections_shed",
            "Connections closed to protect the server: per_client (the address is at its "
            "cap), full (no room, or the longest-idle closed to make some)", "reason",
            {"per_client": c.shed_per_client, "full": c.shed_full})
        yield counter("blockd_http_connections_idle_closed",
                      "Connections closed for waiting too long for a request", c.idle_closed)
        yield gauge("blockd_http_connections_open", "Connections open", conns.open)

    return collect


def nft_group(reconciler: Reconciler) -> Group:
    """The nftables follower: elements per set, applies, packets matched per set."""
    from blockd.nft import ruleset

    def collect() -> Iterator[Metric]:
        r, s = reconciler, reconciler.stats
        yield labelled_gauge(
            "blockd_nft_elements", "Prefixes in each set of table inet blockd (as applied)",
            "set", {name: float(len(r.applied.get(key, ()))) for key, name in
                    ruleset.SETS.items()})
        yield counter("blockd_nft_applies", "Batches applied to the kernel", s.applies)
        yield counter("blockd_nft_apply_failures",
                      "Batches the kernel refused (the previous rules stayed)", s.failures)
        yield counter("blockd_nft_elements_added", "Set elements added", s.added)
        yield counter("blockd_nft_elements_removed", "Set elements removed", s.removed)
        yield counter("blockd_nft_counter_reads", "Reads of the element counters",
                      s.counter_reads)
        yield labelled_counter(
            "blockd_nft_packets",
            "Packets matched by the elements of each set (their counters' growth, read "
            "every 5 s or more)", "set",
            {name: s.packets.get(name, 0) for name in ruleset.SETS.values()})

    return collect


def rpz_group(daemon: RpzDaemon) -> Group:
    """The RPZ primary: the zone, transfers by kind and result, NOTIFY, and how long
    each secondary's serial has been behind. The ``secondary`` label is the address of
    a host that fetched the zone (the few that ``allow_transfer`` lets in)."""
    from blockd.daemon.rpz import secondary_serial

    def collect() -> Iterator[Metric]:
        s, zone = daemon.stats, daemon.zone
        if zone is None:
            return
        yield gauge("blockd_rpz_zone_serial", "SOA serial of the zone version served",
                    float(zone.serial))
        if s.records is not None:  # counted once after the start-up proof
            yield gauge("blockd_rpz_zone_records",
                        "Records in the zone version served (what an AXFR sends, the SOA "
                        "once)", float(s.records))
        transfers = CounterMetricFamily(
            "blockd_rpz_transfers",
            "Zone transfer queries by kind (axfr; ixfr; ixfr_fallback: an IXFR answered "
            "with the whole zone) and result (ok; up_to_date; use_tcp: an IXFR over UDP "
            "told to retry over TCP; refused: not allowed, unsigned or malformed; "
            "aborted: the client left mid-transfer)", labels=["kind", "result"])
        for kind in ("axfr", "ixfr", "ixfr_fallback"):
            for result in ("ok", "aborted", "refused"):
                transfers.add_metric([kind, result], s.transfers[(kind, result)])
        for kind, result in (("ixfr", "up_to_date"), ("ixfr", "use_tcp")):
            transfers.add_metric([kind, result], s.transfers[(kind, result)])
        yield transfers
        yield counter("blockd_rpz_notify_sent", "NOTIFY messages sent (retries count)",
                      s.notify_sent)
        yield counter("blockd_rpz_notify_failed",
                      "NOTIFY messages unanswered within their timeout, or not sent",
                      s.notify_failed)
        now = time.time()
        serials = GaugeMetricFamily(
            "blockd_rpz_secondary_serial", "The serial each secondary last fetched",
            labels=["secondary"])
        ages = GaugeMetricFamily(
            "blockd_rpz_secondary_serial_age_seconds",
            "Seconds each secondary's last fetched serial has been behind the zone's "
            "(0 while it has the current one)", labels=["secondary"])
        for host, entry in sorted(daemon.secondaries.items()):
            serial = secondary_serial(entry)
            if serial is None:
                continue
            since = s.behind_since(serial, zone.serial)
            serials.add_metric([host], float(serial))
            ages.add_metric([host], 0.0 if since is None else max(0.0, now - since))
        yield serials
        yield ages

    return collect


# -- registry and exposition --------------------------------------------------------------


def registry_for(collector: StatsCollector) -> CollectorRegistry:
    """The collector with prometheus_client's process_* and python_info families."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


class _Fixed(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def merge(parts: Iterable[tuple[str, Iterable[Metric]]]) -> bytes:
    """One exposition of several processes' families: (worker label, families) each;
    every sample gets ``worker="label"``; families of one name are joined."""
    merged: dict[str, Metric] = {}
    for worker, families in parts:
        for family in families:
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation,
                                                    family.type, family.unit)
            into.samples.extend(s._replace(labels={**s.labels, "worker": worker})
                                for s in family.samples)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(merged.values()))
    return generate_latest(registry)


class WorkerFiles:
    """The per-run directory where workers 1..N-1 leave their exposition for worker 0.

    ``<state dir>/metrics/<instance>-<pid of the parent process>/worker-<N>.prom``: the
    parent's pid makes the directory one run's (a restarted daemon never reads the files
    of the last run); worker 0 removes the directories of runs whose parent is gone.
    """

    def __init__(self, state_dir: Path, instance: str, worker: int, workers: int,
                 run: int | None = None) -> None:
        self.root = state_dir / "metrics"
        self.instance = instance
        self.run = run if run is not None else os.getppid()
        self.directory = self.root / f"{instance}-{self.run}"
        self.worker, self.workers = worker, workers
        self._complained = False

    def path(self, worker: int) -> Path:
        return self.directory / f"worker-{worker}.prom"

    def write(self, exposition: bytes) -> None:
        """Replace this worker's file atomically (temporary file, then rename)."""
        target = self.path(self.worker)
        tmp = target.with_suffix(".tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(exposition)
            tmp.replace(target)
        except OSError as exc:
            if not self._complained:  # once: the DNS service goes on regardless
                log.warning("worker %d: metrics not published in %s: %s", self.worker,
                            self.directory, exc)
                self._complained = True

    def peers(self, now: float | None = None) -> list[tuple[str, str]]:
        """(worker label, exposition) of each other worker whose file is fresh."""
        now = time.time() if now is None else now
        out = []
        for worker in range(self.workers):
            if worker == self.worker:
                continue
            path = self.path(worker)
            try:
                if now - path.stat().st_mtime > STALE_AFTER:
                    continue
                out.append((str(worker), path.read_text(encoding="utf-8")))
            except OSError:
                continue  # not written yet, or gone
        return out

    def remove_own(self) -> None:
        with contextlib.suppress(OSError):
            self.path(self.worker).unlink()
        if self.worker == 0:
            with contextlib.suppress(OSError):
                self.directory.rmdir()  # if the others are gone too

    def remove_dead_runs(self) -> None:
        """Directories of this instance's earlier runs whose parent process is gone."""
        try:
            entries = list(self.root.iterdir())
        except OSError:
            return
        for entry in entries:
            prefix, _, pid = entry.name.rpartition("-")
            if prefix != self.instance or not pid.isdigit() or int(pid) == self.run:
                continue
            try:
                os.kill(int(pid), 0)
                continue  # still running (another instance's run)
            except ProcessLookupError:
                shutil.rmtree(entry, ignore_errors=True)
            except OSError:
                continue


class MetricsServer:
    """``/metrics`` and ``/healthz`` on one address (port 0: any free port).

    With ``peers`` (worker 0 of several), ``/metrics`` merges the other workers' files
    and labels every sample with its worker.
    """

    def __init__(self, collector: StatsCollector, host: str, port: int,
                 peers: WorkerFiles | None = None) -> None:
        self.collector = collector
        self.host, self.port = host, port
        self.peers = peers
        self.registry = registry_for(collector)
        self._runner: web.AppRunner | None = None

    def exposition(self) -> bytes:
        if self.peers is None:
            return generate_latest(self.registry)
        parts: list[tuple[str, Iterable[Metric]]] = [
            (str(self.peers.worker), list(self.registry.collect()))]
        for worker, text in self.peers.peers():
            try:
                parts.append((worker, list(text_string_to_metric_families(text))))
            except ValueError as exc:  # cannot happen with an atomic write; never fatal
                log.warning("worker %s: unreadable metrics file: %s", worker, exc)
        return merge(parts)

    async def start(self) -> tuple[str, int]:
        from aiohttp import web

        core = self.collector.core
        if self.peers is not None:
            self.peers.remove_dead_runs()

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=self.exposition(), headers={"Content-Type": CONTENT_TYPE})

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
        if self.peers is not None:
            self.peers.remove_own()


async def publish(files: WorkerFiles, registry: CollectorRegistry,
                  every: float = PUBLISH_INTERVAL) -> None:
    """A worker other than 0: write its exposition every ``every`` seconds, at once first."""
    import asyncio

    while True:
        files.write(generate_latest(registry))
        await asyncio.sleep(every)


def address_line(bound: tuple[str, int] | None) -> str:
    """The describe() suffix naming the metrics URL (tests read it)."""
    if bound is None:
        return ""
    host, port = bound
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"; metrics http://{where}/metrics"
