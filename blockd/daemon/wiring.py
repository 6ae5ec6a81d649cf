"""Wiring for the daemons: config + store follower + service + transports + signals.

The only place that knows how the parts fit together; each part stays testable alone.
SIGTERM/SIGINT stop gracefully (hits flushed); SIGHUP re-reads the configuration and the
enforcement policies and applies what can change live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
from collections.abc import Callable
from dataclasses import replace

from aiohttp import web

from blockd.config import Config, load_policies
from blockd.core.enforcement import EnforcementPolicy
from blockd.core.model import BlockdError
from blockd.daemon.metrics import StatsCollector, start_metrics
from blockd.daemon.tasks import cancel
from blockd.dns.answers import BlockedAnswers
from blockd.dns.server import DnsServer
from blockd.dns.service import Acl, DnsService, RateLimiter
from blockd.dns.upstream import Upstreams
from blockd.store.follow import IndexFollower
from blockd.store.hits import HitCounter
from blockd.store.store import Store
from blockd.web.app import NoticeSettings, NoticeSite
from blockd.web.server import NoticeServer

log = logging.getLogger("blockd")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def install_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    uvloop.install()
    return True


async def until_stopped(
    reload: Callable[[], Config] | None,
    apply: Callable[[Config, dict[str, EnforcementPolicy]], None],
) -> None:
    """Wait for SIGTERM/SIGINT; on SIGHUP re-read the configuration and policies and hand
    them to ``apply`` (a broken file is logged and the running configuration kept)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    def on_hup() -> None:
        if reload is None:
            return
        try:
            fresh = reload()
            policies = load_policies(fresh.policies_dir)
        except BlockdError as exc:
            log.error("SIGHUP: configuration not reloaded: %s", exc)
            return
        apply(fresh, policies)
        log.info("SIGHUP: configuration reloaded")

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    await stop.wait()
    log.info("stopping")


async def start_core(config: Config) -> tuple[dict[str, EnforcementPolicy], IndexFollower,
                                             HitCounter]:
    """What every daemon starts with: its policies, the live policy, the hit counter."""
    policies = load_policies(config.policies_dir)
    follower = IndexFollower(config.db, {n: p.dns_action for n, p in policies.items()})
    await follower.start()
    hits = HitCounter(config.db, config.hits_flush_interval)
    hits.start()
    return policies, follower, hits


async def serve_dns(config: Config, reload: Callable[[], Config] | None = None,
                    *, reuse_port: bool = False) -> None:
    """Run the resolver until SIGTERM/SIGINT."""
    policies, follower, hits = await start_core(config)
    answers = BlockedAnswers(policies, config.notice_ipv4, config.notice_ipv6,
                             config.notice_url, follower.index.seq)
    follower.on_swap(lambda p: answers.clear(p.seq))
    settings = config.dns
    upstreams = Upstreams(settings.upstream, timeout=settings.upstream_timeout,
                          max_inflight=settings.max_inflight)
    service = DnsService(lambda: follower.index, answers, settings, upstreams, hits)
    server = DnsServer(service, settings.listen, idle_timeout=settings.tcp_idle_timeout,
                       reuse_port=reuse_port)
    bound = await server.start()
    metrics_runner = None
    metrics_where = ""
    if settings.metrics is not None:
        collector = StatsCollector(
            "blockd_dns", follower,
            {"queries": lambda: service.stats, "upstream": lambda: upstreams.stats},
            {"cache_entries": lambda: float(len(service.cache)),
             "cache_bytes": lambda: float(service.cache.bytes),
             "upstream_inflight": lambda: float(upstreams.inflight),
             "hits_pending": lambda: float(sum(hits.pending.values()))})
        metrics_runner = await start_metrics(collector, *settings.metrics)
        port = _bound_port(metrics_runner) or settings.metrics[1]
        metrics_where = f"; metrics http://{_hostport(settings.metrics[0], port)}/metrics"
    where = ", ".join(_hostport(h, p) for h, p in bound)
    # one write per line: with --workers several processes share this stdout
    sys.stdout.write(f"blockd dns: listening on {where} (udp+tcp); upstream "
                     f"{', '.join(_hostport(h, p) for h, p in settings.upstream)}; journal "
                     f"seq {follower.index.seq}{metrics_where}\n")
    sys.stdout.flush()

    def apply(fresh: Config, new_policies: dict[str, EnforcementPolicy]) -> None:
        answers.policies = new_policies
        answers.clear(follower.index.seq)
        follower.set_actions({n: p.dns_action for n, p in new_policies.items()})
        s = fresh.dns
        service.acl = Acl(s.allow)
        service.limiter = RateLimiter(s.rate_limit, s.rate_burst, service.clock)
        upstreams.servers = list(s.upstream)
        service.forget()
        if s.listen != settings.listen:
            log.warning("SIGHUP: listen addresses change only on restart")

    await until_stopped(reload, apply)
    await server.stop()
    if metrics_runner is not None:
        await metrics_runner.cleanup()
    await hits.stop()
    await follower.stop()


async def serve_http(config: Config, reload: Callable[[], Config] | None = None) -> None:
    """Run the notice server until SIGTERM/SIGINT."""
    policies, follower, hits = await start_core(config)
    tls = None
    if config.tls_listen is not None:
        if config.tls_cert is None or config.tls_key is None:
            raise BlockdError("notice.tls_listen needs notice.tls_cert and notice.tls_key")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(config.tls_cert, config.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise BlockdError(f"notice.tls_cert/tls_key: cannot load: {exc}") from None
        tls = (config.tls_listen, context)

    def settings_of(c: Config, pols: dict[str, EnforcementPolicy]) -> NoticeSettings:
        return NoticeSettings(
            notice_url=c.notice_url, isp_name=c.isp_name, isp_contact=c.isp_contact,
            transparency=c.transparency,
            retry_after=max((p.dns_ttl for p in pols.values()), default=30))

    past = Store.open(config.db)
    site = NoticeSite(lambda: follower.index, policies, config.policies_dir / "notices",
                      settings_of(config, policies), hits=hits, past=past,
                      healthy=lambda: follower.healthy)
    server = NoticeServer(site, config.notice_listen, tls)
    bound = await server.start()
    where = ", ".join(f"{'https' if t else 'http'}://{_hostport(h, p)}/" for h, p, t in bound)
    sys.stdout.write(f"blockd http: listening on {where}; journal seq "
                     f"{follower.index.seq}\n")
    sys.stdout.flush()

    def apply(fresh: Config, new_policies: dict[str, EnforcementPolicy]) -> None:
        site.enforcement = new_policies
        site.settings = settings_of(fresh, new_policies)
        site.forget()

    await until_stopped(reload, apply)
    await server.stop()
    past.close()
    await hits.stop()
    await follower.stop()


async def serve_nft(config: Config, reload: Callable[[], Config] | None = None) -> None:
    """Keep table inet blockd equal to the orders in force; rules stay when it exits."""
    from blockd.core.guard import load_guard
    from blockd.nft import netlink, ruleset
    from blockd.nft.guarded import refuser
    from blockd.store.store import Store

    policies, follower, hits = await start_core(config)
    names = await asyncio.to_thread(netlink.existing_sets, ruleset.TABLE)
    applied: dict[ruleset.Key, set[netlink.Network]] = {}
    for key, name in ruleset.SETS.items():
        applied[key] = set(await asyncio.to_thread(netlink.read_set, ruleset.TABLE, name,
                                                   key[0])) if name in names else set()
    state = {"exists": bool(names)}
    lock = asyncio.Lock()
    actions = {name: p.nft_action for name, p in policies.items()}
    notice = ruleset.Notice.from_config(config)

    guard = load_guard(config.policies_dir)

    def store_forced() -> set[str]:
        store = Store.open(config.db)
        try:
            return store.forced_targets()
        finally:
            store.close()

    async def reconcile() -> None:
        async with lock:
            try:
                forced = await asyncio.to_thread(store_forced)
            except BlockdError:
                forced = set()  # unreadable store: the guard refuses everything it would
            want = ruleset.desired(follower.index, actions, refused=refuser(guard, forced))
            changes = ruleset.diff(applied, want)
            if state["exists"] and not any(c.add or c.remove for c in changes):
                return
            try:
                await asyncio.to_thread(netlink.apply,
                                        ruleset.plan(changes, state["exists"], notice,
                                                     config.nft_local_output))
            except netlink.NftError as exc:
                log.error("nftables not updated (previous rules stay): %s", exc)
                return
            state["exists"] = True
            applied.update(want)
            log.info("nftables: %d added, %d removed (journal seq %s)",
                     sum(len(c.add) for c in changes), sum(len(c.remove) for c in changes),
                     follower.index.seq)

    await reconcile()
    seen: dict[tuple[ruleset.Key, netlink.Network], int] = {}

    def read_counters() -> dict[tuple[ruleset.Key, netlink.Network], int]:
        out = {}
        for key, name in ruleset.SETS.items():
            if applied.get(key):
                for net, (packets, _) in netlink.read_set(ruleset.TABLE, name, key[0]).items():
                    out[(key, net)] = packets
        return out

    async def count_hits() -> None:
        """Element counters -> hits of the order and target behind each prefix."""
        while True:
            await asyncio.sleep(max(5.0, config.hits_flush_interval))
            try:
                counters = await asyncio.to_thread(read_counters)
            except netlink.NftError as exc:
                log.warning("nftables counters not read: %s", exc)
                continue
            policy = follower.index
            for (key, net), packets in counters.items():
                delta = packets - seen.get((key, net), 0)
                seen[(key, net)] = packets
                if delta > 0:
                    decision = policy.decide_ip(str(net.network_address))
                    if decision.primary is not None:
                        hits.add(decision.primary.order.reference,
                                 decision.primary.target.spec, count=delta)

    counting = asyncio.get_running_loop().create_task(count_hits())
    pending: set[asyncio.Task[None]] = set()

    def on_swap(_: object) -> None:
        task = asyncio.get_running_loop().create_task(reconcile())
        pending.add(task)
        task.add_done_callback(pending.discard)

    follower.on_swap(on_swap)
    sys.stdout.write(f"blockd nft: table inet blockd follows the journal (seq "
                     f"{follower.index.seq})\n")
    sys.stdout.flush()
    await until_stopped(reload, lambda fresh, pols: None)
    await cancel(counting)
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    await hits.stop()
    await follower.stop()


def run_nft(make_config: Callable[[], Config]) -> int:
    asyncio.run(serve_nft(make_config(), make_config))
    return 0


def run_http(make_config: Callable[[], Config]) -> int:
    install_uvloop()
    asyncio.run(serve_http(make_config(), make_config))
    return 0


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bound_port(runner: web.AppRunner) -> int | None:
    for site in runner.sites:
        server = getattr(site, "_server", None)
        for sock in getattr(server, "sockets", None) or []:
            return int(sock.getsockname()[1])
    return None


def run_dns(make_config: Callable[[], Config], workers: int) -> int:
    """Start one worker, or fork ``workers`` processes sharing the ports (SO_REUSEPORT).

    ``make_config`` loads the file and applies command-line overrides; SIGHUP calls it again.
    """
    install_uvloop()
    config = make_config()
    reload = make_config

    if workers <= 1:
        asyncio.run(serve_dns(config, reload))
        return 0
    if any(port == 0 for _, port in config.dns.listen):
        raise BlockdError("--workers needs explicit listen ports (not 0)")
    children: list[int] = []
    for index in range(workers):
        pid = os.fork()
        if pid == 0:  # child; only the first worker serves /metrics (its own counters)
            mine = config if index == 0 else replace(
                config, dns=replace(config.dns, metrics=None))
            code = 1
            try:
                asyncio.run(serve_dns(mine, reload, reuse_port=True))
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
