"""`blockd hits` on a year of daily buckets for 5,000 orders of 100 targets each.

Builds a store (real SQLite file, the real schema from `blockd init`) holding, for every
order and every day of a year, a per-order bucket per channel with a small client sketch,
and target buckets for ``--targets-per-day`` of each order's 100 targets per day (a
blocked site is not asked for every one of its mirrors every day; 100 of 100 every day
would be 182 million rows). Then times the real CLI end to end (process start included)
and the store query alone, for the questions an engineer asks. Goal: each under 1 s.

    python bench/hits_bench.py [--orders 5000] [--days 365] [--targets-per-day 5]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from blockd.core.hits import HitQuery
from blockd.core.model import OrderRecord
from blockd.core.names import parse_target
from blockd.core.sketch import Sketch
from blockd.store.store import Store

GOAL_S = 1.0


def sketch_of(clients: range, day: int) -> bytes:
    s = Sketch()
    for c in clients:
        s.add(hash((c, day)) & (2**64 - 1))
    return s.encode()


def build(db: Path, orders: int, days: int, per_day: int) -> tuple[int, int]:
    subprocess.run([sys.executable, "-m", "blockd", "init", "--db", str(db)], check=True,
                   capture_output=True)
    now = datetime.now(UTC)
    store = Store.open(str(db))
    for o in range(orders):  # through the store, journaled, as `order add` would
        store.add_order(OrderRecord(f"ORD-{o:05d}", "Court", date(2025, 1, 2), now),
                        [parse_target(f"site{t}.order{o}.example") for t in range(100)],
                        actor="bench", at=now)
    store.close()
    today = now.date()
    rng = random.Random(7)
    sketches = [sketch_of(range(rng.randint(1, 40)), i) for i in range(64)]
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    rollup = targets = 0
    for d in range(days):
        day = (today - timedelta(days=d)).isoformat()
        rows = []
        fine = []
        for o in range(orders):
            ref = f"ORD-{o:05d}"
            for ch in ("dns", "http"):
                rows.append((ref, day, ch, rng.randint(1, 500), sketches[(o + d) % 64]))
            for t in range(per_day):
                target = f"site{(d * per_day + t) % 100}.order{o}.example"
                fine.append((ref, day, target, "dns", rng.randint(1, 50),
                             sketches[(o + t) % 64]))
        con.executemany("INSERT INTO hit_orders (reference, day, channel, count, clients) "
                        "VALUES (?, ?, ?, ?, ?)", rows)
        con.executemany("INSERT INTO hits (reference, day, target, channel, count, clients) "
                        "VALUES (?, ?, ?, ?, ?, ?)", fine)
        rollup += len(rows)
        targets += len(fine)
    # the monthly totals the store keeps beside the days (store/hitsql.py)
    con.execute("INSERT INTO hit_months (reference, month, channel, count, first_day, "
                "last_day, buckets) SELECT reference, substr(day, 1, 7), channel, SUM(count), "
                "MIN(day), MAX(day), COUNT(*) FROM hit_orders "
                "GROUP BY reference, substr(day, 1, 7), channel")
    con.execute("INSERT INTO hit_days (day, channel, count, buckets) SELECT day, channel, "
                "SUM(count), COUNT(*) FROM hit_orders GROUP BY day, channel")
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("ANALYZE")
    con.close()
    return rollup, targets


def cli_time(db: Path, args: list[str]) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "blockd", "hits", *args, "--db", str(db)],
                       check=True, capture_output=True)
        best = min(best, time.perf_counter() - start)
    return best


def query_time(store: Store, query: HitQuery, top: int | None) -> tuple[float, str]:
    best, clients = float("inf"), ""
    for _ in range(3):
        start = time.perf_counter()
        summary = store.hit_summary(query, top)
        best = min(best, time.perf_counter() - start)
        clients = "estimated" if summary.estimated else "left out"
    return best, clients


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=5000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--targets-per-day", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="Keep the store (prints its path).")
    ap.add_argument("--store", type=Path, help="Query a store a --keep run built.")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hits-bench-"))
    db = args.store or tmp / "hits.db"
    if args.store is None:
        start = time.perf_counter()
        rollup, targets = build(db, args.orders, args.days, args.targets_per_day)
        size = db.stat().st_size / 2**20
        print(f"built {rollup:,} per-order buckets and {targets:,} target buckets "
              f"({args.orders} orders x 100 targets, {args.days} days; {size:.0f} MiB) "
              f"in {time.perf_counter() - start:.0f} s")
    today = datetime.now(UTC).date()
    month = (today - timedelta(days=29)).isoformat()
    middle = args.orders // 2
    one = f"ORD-{middle:05d}"
    cases: list[tuple[str, list[str], HitQuery, int | None]] = [
        ("every order, the whole year, top 20", ["--top", "20"], HitQuery(), 20),
        ("every order, the whole year, all rows", [], HitQuery(), None),
        ("per day, the whole year", ["--by", "day"], HitQuery(by="day"), None),
        ("per channel, last 30 days", ["--by", "channel", "--since", month],
         HitQuery(by="channel", since=date.fromisoformat(month)), None),
        ("one order, per target, the whole year", ["--order", one, "--by", "target"],
         HitQuery(reference=one, by="target"), None),
        ("one order, per day", ["--order", one, "--by", "day"],
         HitQuery(reference=one, by="day"), None),
        ("one target, per day", ["--target", f"site7.order{middle}.example", "--by", "day"],
         HitQuery(target=f"site7.order{middle}.example", by="day"), None),
        ("top 10 targets, last 7 days", ["--by", "target", "--top", "10", "--since", "6d"],
         HitQuery(by="target", since=today - timedelta(days=6)), 10),
    ]
    store = Store.open(str(db))
    print(f"{'question':<40} {'CLI (s)':>8} {'query (s)':>10}  clients   goal {GOAL_S:.0f} s")
    for label, cli_args, query, top in cases:
        q, clients = query_time(store, query, top)
        c = cli_time(db, cli_args)
        print(f"{label:<40} {c:>8.3f} {q:>10.3f}  {clients:<9} "
              f"{'ok' if c < GOAL_S else 'MISSED'}")
    store.close()
    if args.keep or args.store:
        print(f"store kept at {db}")
    else:
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()


if __name__ == "__main__":
    main()
