"""What the store costs per operation, on SQLite or PostgreSQL: one-order writes (what an
engineer's command does), a 10,000-target batch, the follower's poll (journal head), the
whole load of 100k targets a daemon does at start. The median of each, and the figures
of SQLite measured in the same run as the anchor when --db is a PostgreSQL URL.

    python bench/store_bench.py [--db postgresql://user@127.0.0.1/empty_db] [--orders 200]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

from blockd.core.model import OrderRecord
from blockd.core.names import parse_target
from blockd.store.store import Store

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def order(ref: str) -> OrderRecord:
    return OrderRecord(reference=ref, authority="Court", issued_on=date(2025, 12, 1),
                       received_at=NOW)


def each(runs: int, step: Callable[[int], object]) -> float:
    """Median seconds of ``step(i)`` over ``runs`` calls."""
    times = []
    for i in range(runs):
        start = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(db: str, orders: int) -> dict[str, float]:
    store = Store.open(db, create=True)
    store.init()
    try:
        add = each(orders, lambda i: store.add_order(
            order(f"R-{i}"), [parse_target(f"site{i}.example")], actor="b", at=NOW))
        batch = [parse_target(f"t{n}.bulk.example") for n in range(100_000)]
        bulk = each(10, lambda i: store.add_targets(
            "R-0", batch[i * 10_000:(i + 1) * 10_000], actor="b", at=NOW, unique=True))
        head = each(500, lambda _i: store.head())
        load = each(3, lambda _i: sum(1 for _o, rows in store.load_rows() for _ in rows))
    finally:
        store.close()
    return {"add_order": add, "add_targets_10k": bulk, "head": head, "load_100k": load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", help="an empty PostgreSQL database (default: SQLite only)")
    ap.add_argument("--orders", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {"SQLite": measure(str(Path(tmp) / "bench.db"), args.orders)}
    if args.db:
        results["PostgreSQL"] = measure(args.db, args.orders)
    print(f"{'':12} {'add_order':>10} {'10k targets':>12} {'head (poll)':>12} "
          f"{'load 100k':>10}")
    for name, r in results.items():
        print(f"{name:12} {r['add_order'] * 1000:>8.2f}ms {r['add_targets_10k'] * 1000:>10.0f}"
              f"ms {r['head'] * 1000:>10.3f}ms {r['load_100k']:>9.2f}s")


if __name__ == "__main__":
    main()
