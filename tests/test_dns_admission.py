"""Admission: the client ACL and the per-client token bucket, without sockets."""

from __future__ import annotations

import subprocess
import sys

import pytest

from blockd.dns.admission import Acl, RateLimiter


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


ACL = Acl(("10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32", "fe80::/10"))


@pytest.mark.parametrize("address", [
    "10.1.2.3", "192.0.2.255", "2001:db8::1", "2001:DB8:0:0::7",
    "::ffff:10.0.0.1", "::ffff:192.0.2.9",  # IPv4-mapped, from a dual-stack socket
    "fe80::1%eth0", "fe80::1",  # scoped: the zone is not part of the address
])
def test_acl_allows(address: str) -> None:
    assert ACL.allowed(address)


@pytest.mark.parametrize("address", [
    "11.0.0.1", "192.0.3.1", "2001:db9::1", "::1", "127.0.0.1",
    "::ffff:11.0.0.1", "::ffff:c000:0301",  # mapped addresses outside the IPv4 networks
    "::10.0.0.1",  # IPv4-compatible (deprecated) is not IPv4-mapped
    "fec0::1%eth0",
    "", "garbage", "%eth0", "10.0.0.256", "10.0.0.1/8", "1.2.3", "::g",
    "10.0.0.1 ", "２.0.0.1",
])
def test_acl_refuses(address: str) -> None:
    assert not ACL.allowed(address)


def test_acl_without_networks_refuses_everyone() -> None:
    assert not Acl(()).allowed("127.0.0.1")


def test_ipv4_networks_do_not_match_ipv6_and_back() -> None:
    only_v4 = Acl(("0.0.0.0/0",))
    assert only_v4.allowed("203.0.113.1") and only_v4.allowed("::ffff:203.0.113.1")
    assert not only_v4.allowed("2001:db8::1")
    only_v6 = Acl(("::/0",))
    assert only_v6.allowed("2001:db8::1") and not only_v6.allowed("203.0.113.1")


def test_bucket_burst_then_refill() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3.0, clock=clock)
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")  # buckets are per client
    clock.now += 0.4  # 0.8 tokens: not yet one
    assert not limiter.allow("a")
    clock.now += 0.1  # the refused query above did not spend anything: 1.0 now
    assert limiter.allow("a") and not limiter.allow("a")
    clock.now += 100  # refill is capped at the burst
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]


def test_bucket_steady_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=4.0, burst=1.0, clock=clock)
    allowed = 0
    for _ in range(800):  # 100 s of queries every 1/8 s (exact in binary)
        allowed += limiter.allow("c")
        clock.now += 0.125
    assert allowed == 400


def test_table_is_bounded_and_keeps_the_clients_being_limited() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=2.0, clock=clock, max_clients=100)
    assert limiter.allow("limited") and limiter.allow("limited")
    assert not limiter.allow("limited")
    for i in range(1000):  # a flood of new (spoofed) addresses
        clock.now += 0.0001
        assert limiter.allow(f"10.0.{i // 256}.{i % 256}")
        assert len(limiter) <= 100
        if i % 37 == 0:
            assert not limiter.allow("limited")  # still refused: not forgotten
    # forgetting only half at a time: the most recent clients are still in the table
    assert len(limiter) > 50


def test_pruning_drops_refilled_buckets_first() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=5.0, clock=clock, max_clients=10)
    for i in range(9):
        limiter.allow(f"old{i}")  # 4 tokens left each
    clock.now += 10  # all refilled: they carry no information any more
    for _ in range(5):
        limiter.allow("busy")  # 0 tokens
    assert len(limiter) == 10
    assert limiter.allow("new")
    assert len(limiter) == 2  # "busy" and "new"
    assert not limiter.allow("busy")


def test_pruning_keeps_the_most_recently_refilled_half() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=0.001, burst=2.0, clock=clock, max_clients=10)
    for i in range(10):
        clock.now += 1
        limiter.allow(f"c{i}")  # 1 token each, none refills in this test
    assert limiter.allow("new")
    assert len(limiter) == 6
    kept = {c for c in (f"c{i}" for i in range(10)) if c in limiter._buckets}
    assert kept == {"c5", "c6", "c7", "c8", "c9"}


def test_dns_service_does_not_import_the_store() -> None:
    """The resolver's process needs no ORM or web framework (ports.HitSink instead)."""
    code = (
        "import sys\n"
        "import blockd.dns.service, blockd.dns.answers, blockd.dns.cache\n"
        "import blockd.dns.upstream, blockd.dns.wire, blockd.dns.admission\n"
        "heavy = {'sqlalchemy', 'sqlmodel', 'aiohttp'}\n"
        "bad = sorted(m for m in sys.modules\n"
        "             if m.split('.')[0] in heavy or m == 'blockd.store'\n"
        "             or m.startswith('blockd.store.'))\n"
        "assert 'blockd.dns.service' in sys.modules\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""
