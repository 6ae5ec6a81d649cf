#!/usr/bin/env python3
"""Block index benchmark: compile time, lookups/s and memory for 10k/100k/1M domain targets.

Each size runs in a fresh subprocess so its memory figure is its own. Goals (issue 2):
1M domain targets compile in under 5 s and the process stays under 300 MB RSS.
With --store it also measures loading the same targets from a real SQLite store.

    python bench/policy_bench.py [--sizes 10000,100000,1000000] [--store]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

from blockd.core.index import IndexBuilder
from blockd.core.model import DomainMatch, OrderRecord, Target, TargetKind

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LOOKUPS = 200_000


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def names(n: int, seed: int = 1, every: int = 1) -> list[str]:
    """n synthetic registrable names (deterministic); keep only every ``every``-th."""
    rnd = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    tlds = ["com", "net", "org", "ru", "it", "dk", "xyz", "top"]
    out = []
    for i in range(n):
        name = "".join(rnd.choices(alphabet, k=rnd.randint(6, 14))) + f"{i}." + rnd.choice(tlds)
        if i % every == 0:
            out.append(name)
    return out


def order(ref: str) -> OrderRecord:
    return OrderRecord(reference=ref, authority="Bench Court", issued_on=date(2025, 1, 1),
                       received_at=NOW)


def make_store(n: int, path: str) -> None:
    """Write n targets into a fresh SQLite store (in its own process: no memory carried)."""
    from blockd.store.store import Store

    store = Store.open(path, create=True)
    store.init()
    targets = [Target(TargetKind.DOMAIN, d) for d in names(n)]
    store.add_order(order("BENCH-1"), targets, actor="bench", at=NOW)
    store.close()


def measure(n: int, store_path: str | None) -> dict[str, float]:
    """Compile n targets (from memory, or loading them from a store) and probe lookups."""
    gc.collect()
    base = rss_mb()
    builder = IndexBuilder(NOW)
    if store_path:
        from blockd.store.store import Store

        t0 = time.perf_counter()
        store = Store.open(store_path)
        for rec, rows in store.load_rows():
            builder.load_rows(rec, rows)
        store.close()
        policy = builder.index()
        compile_s = time.perf_counter() - t0
        domains = names(n, every=max(1, n // 1000))
    else:
        domains = names(n)
        targets = [Target(TargetKind.DOMAIN, d, DomainMatch.SUBTREE) for d in domains]
        t0 = time.perf_counter()
        builder.load(order("BENCH-1"), targets)
        policy = builder.index()
        compile_s = time.perf_counter() - t0
        del targets
    gc.collect()
    rss = rss_mb()
    rnd = random.Random(2)
    probes = [
        ("www." + rnd.choice(domains)) if i % 2 else f"miss{i}.example.net"
        for i in range(LOOKUPS)
    ]
    t0 = time.perf_counter()
    blocked = 0
    for p in probes:
        if policy.decide_name(p).matches:
            blocked += 1
    lookup_s = time.perf_counter() - t0
    assert blocked == LOOKUPS // 2, blocked
    return {
        "targets": n, "compile_s": round(compile_s, 3),
        "lookups_per_s": round(LOOKUPS / lookup_s), "policy_mb": round(rss - base, 1),
        "rss_mb": round(rss, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--store", action="store_true", help="also load from a SQLite store")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--from-store", help=argparse.SUPPRESS)
    ap.add_argument("--make-store", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make_store:
        make_store(args.one, args.make_store)
        return
    if args.one:
        print(json.dumps(measure(args.one, args.from_store)))
        return
    print(f"{'targets':>9} {'source':>7} {'compile s':>10} {'lookups/s':>11} "
          f"{'policy MB':>10} {'RSS MB':>8}")
    me = [sys.executable, __file__]
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            db = str(Path(tmp) / "bench.db")
            runs: list[list[str]] = [[]]
            if args.store:
                subprocess.run([*me, "--one", str(n), "--make-store", db], check=True)
                runs.append(["--from-store", db])
            for extra in runs:
                out = subprocess.run([*me, "--one", str(n), *extra], check=True,
                                     capture_output=True, text=True).stdout
                r = json.loads(out)
                print(f"{r['targets']:>9} {'sqlite' if extra else 'memory':>7} "
                      f"{r['compile_s']:>10} {r['lookups_per_s']:>11} {r['policy_mb']:>10} "
                      f"{r['rss_mb']:>8}")
    print("goals: 1M compile < 5 s, RSS < 300 MB")


if __name__ == "__main__":
    main()
