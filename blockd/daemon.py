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
import sys
from collections.abc import Callable

from blockd.config import Config
from blockd.core.model import BlockdError
from blockd.dns.answers import BlockedAnswers
from blockd.dns.server import DnsServer
from blockd.dns.service import Acl, DnsService, RateLimiter
from blockd.dns.upstream import Upstreams
from blockd.enforcement import load_policies
from blockd.follow import PolicyFollower
from blockd.hits import HitCounter

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


async def serve_dns(config: Config, reload: Callable[[], Config] | None = None,
                    *, reuse_port: bool = False) -> None:
    """Run the resolver until SIGTERM/SIGINT."""
    policies = load_policies(config.policies_dir)
    actions = {name: p.dns_action for name, p in policies.items()}
    follower = PolicyFollower(config.db, actions)
    await follower.start()
    answers = BlockedAnswers(policies, config.notice_ipv4, config.notice_ipv6,
                             config.notice_url, follower.policy.seq)
    follower.on_swap(lambda p: answers.clear(p.seq))
    hits = HitCounter(config.db, config.hits_flush_interval)
    hits.start()
    settings = config.dns
    upstreams = Upstreams(settings.upstream, timeout=settings.upstream_timeout,
                          max_inflight=settings.max_inflight)
    service = DnsService(lambda: follower.policy, answers, settings, upstreams, hits)
    server = DnsServer(service, settings.listen, idle_timeout=settings.tcp_idle_timeout,
                       reuse_port=reuse_port)
    bound = await server.start()
    where = ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in bound)
    print(f"blockd dns: listening on {where} (udp+tcp); upstream "
          f"{', '.join(f'{h}:{p}' for h, p in settings.upstream)}; journal seq "
          f"{follower.policy.seq}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    def on_hup() -> None:
        if reload is None:
            return
        try:
            fresh = reload()
            new_policies = load_policies(fresh.policies_dir)
        except BlockdError as exc:
            log.error("SIGHUP: configuration not reloaded: %s", exc)
            return
        answers.policies = new_policies
        answers.clear(follower.policy.seq)
        follower.actions = {n: p.dns_action for n, p in new_policies.items()}
        s = fresh.dns
        service.acl = Acl(s.allow)
        service.limiter = RateLimiter(s.rate_limit, s.rate_burst, service.clock)
        upstreams.servers = list(s.upstream)
        service.forget()
        if s.listen != settings.listen:
            log.warning("SIGHUP: listen addresses change only on restart")
        log.info("SIGHUP: configuration reloaded (actions apply from the next rebuild)")

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    await stop.wait()
    log.info("stopping")
    await server.stop()
    await hits.stop()
    await follower.stop()


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
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # child
            try:
                asyncio.run(serve_dns(config, reload, reuse_port=True))
            finally:
                os._exit(0)
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
