"""Who may query, and how fast: the checks made before a query is looked at.

:class:`Acl` keeps blockd from being an open resolver (only configured client networks get
answers). :class:`RateLimiter` is a token bucket per client address, applied to UDP only
(a TCP client has completed a handshake, so its address is not spoofed). Both are called
on every query, the replay memo's included: keep them to a dict lookup or two.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import lru_cache

MAX_CLIENTS = 100_000  # buckets kept by a RateLimiter; see RateLimiter._prune


class Acl:
    """Client networks allowed to query (no open resolver). Results memoised per address.

    Accepts the address strings the transports report: IPv4, IPv6 with an optional zone
    (``fe80::1%eth0``, matched without it) and IPv4-mapped IPv6 (``::ffff:192.0.2.1``, from
    a dual-stack socket, matched as the IPv4 address). Anything else is refused.
    """

    def __init__(self, networks: tuple[str, ...]) -> None:
        self.networks = [ipaddress.ip_network(n) for n in networks]
        self._allowed = lru_cache(maxsize=65536)(self._check)

    def _check(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)

    def allowed(self, address: str) -> bool:
        return self._allowed(address)


class RateLimiter:
    """Token bucket per client address: ``burst`` queries at once, then ``rate`` a second.

    The table holds at most ``max_clients`` buckets. When a new client would go past that,
    the buckets that have refilled completely are dropped (forgetting them changes nothing)
    and, if more than half the table is still in use, only the most recently refilled half
    is kept: a flood from many (spoofed) addresses cannot reset the limit of the clients
    being limited right now. That costs one sort per ``max_clients / 2`` new clients and
    nothing per query.
    """

    def __init__(self, rate: float, burst: float, clock: Callable[[], float],
                 max_clients: int = MAX_CLIENTS) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, client: str) -> bool:
        now = self.clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= self.max_clients:
                self._prune(now)
            tokens = self.burst
        else:
            tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return False
        self._buckets[client] = (tokens - 1.0, now)
        return True

    def _prune(self, now: float) -> None:
        burst, rate = self.burst, self.rate
        live = [(last, client, tokens) for client, (tokens, last) in self._buckets.items()
                if tokens + (now - last) * rate < burst]
        keep = self.max_clients // 2
        if len(live) > keep:
            live.sort(reverse=True)
            del live[keep:]
        self._buckets = {client: (tokens, last) for last, client, tokens in live}
