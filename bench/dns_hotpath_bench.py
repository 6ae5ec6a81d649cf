"""In-process cost of DnsService.handle for blocked names, without sockets.

Three paths: UDP for one name (after the first query, the replay memo answers: one dict
lookup, the ACL, the rate limiter, the counters), TCP for it (no memo: scan, decide,
render), and names seen once: 400k distinct names (bare, www., m., cdn.) under 100k
targets, each asked once over UDP, as dns_bench's workload of that name sends them (the
memo only costs there). Prints the best of several rounds in ns per query; pin it to one
CPU to compare two checkouts:

    PYTHONPATH=. taskset -c 1 python bench/dns_hotpath_bench.py
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import dns.message

from blockd.config import DnsSettings
from blockd.core.index import compile_index
from blockd.core.model import OrderRecord
from blockd.core.names import parse_target
from blockd.dns.answers import BlockedAnswers
from blockd.dns.service import DnsService
from blockd.dns.upstream import Upstreams
from blockd.store.hits import HitCounter
from blockd.store.shared import SharedStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--queries", type=int, default=300_000, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    policy = compile_index([OrderRecord(
        "FI-15124/2006", "Copenhagen City Court", date(2006, 10, 25), now,
        targets=frozenset({parse_target("allofmp3.com")}))], now)
    settings = DnsSettings(upstream=(("127.0.0.1", 9),), rate_limit=1e12, rate_burst=1e12)
    # hits counted as the daemon counts them (a dict increment and the client sketch)
    counter = HitCounter(SharedStore(str(Path(tempfile.gettempdir()) / "unused.db")))
    hits = counter.channel("dns") if hasattr(counter, "channel") else counter
    service = DnsService(lambda: policy,
                         BlockedAnswers({}, "127.0.0.80", "::80", "https://isp.example/"),
                         settings, Upstreams(settings.upstream), hits)
    data = dns.message.make_query("www.allofmp3.com", "A", use_edns=0).to_wire()
    handle = service.handle
    for tcp in (False, True):
        best = float("inf")
        for _ in range(args.rounds):
            start = time.perf_counter()
            for _ in range(args.queries):
                handle(data, "127.0.0.1", tcp)
            best = min(best, (time.perf_counter() - start) / args.queries)
        label = "tcp (full path)" if tcp else "udp (replay memo)"
        print(f"{label}: {best * 1e9:.0f} ns/query")
    assert service.stats.blocked == 2 * args.rounds * args.queries
    assert sum(counter.pending.values()) == 2 * args.rounds * args.queries
    names_once(settings)


def names_once(settings: DnsSettings, targets: int = 100_000) -> None:
    now = datetime.now(UTC)
    policy = compile_index([OrderRecord(
        "BENCH-1", "Bench Court", date(2026, 1, 1), now,
        targets=frozenset(parse_target(f"site{i}.example") for i in range(targets)))], now)
    names = [f"{p}site{i}.example" for i in range(targets) for p in ("", "www.", "m.", "cdn.")]
    random.Random(1).shuffle(names)
    queries = []
    for i, name in enumerate(names):
        q = dns.message.make_query(name, "A", use_edns=0)
        q.id = i & 0xFFFF
        queries.append(q.to_wire())
    best = float("inf")
    for _ in range(2):  # a fresh service each round: every name is new to it
        counter = HitCounter(SharedStore(str(Path(tempfile.gettempdir()) / "unused.db")))
        service = DnsService(lambda: policy, BlockedAnswers({}, "127.0.0.80", "::80",
                                                            "https://isp.example/"),
                             settings, Upstreams(settings.upstream), counter.channel("dns"))
        handle = service.handle
        start = time.perf_counter()
        for data in queries:
            handle(data, "127.0.0.1", False)
        best = min(best, (time.perf_counter() - start) / len(queries))
        assert service.stats.blocked == len(queries)
    print(f"udp, {len(queries)} names each once ({targets} targets): {best * 1e9:.0f} ns/query")


if __name__ == "__main__":
    main()
