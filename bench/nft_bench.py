#!/usr/bin/env python3
"""nftables benchmark: apply 100k prefixes from empty, then a 1-element change on top.

Runs inside a network namespace it creates and removes (never the host's ruleset).
Goals (nftables issue): under 2 s from empty, under 50 ms for one element.

    python bench/nft_bench.py [--prefixes 100000]      (as root)
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import subprocess
import sys
import time


def inside(prefixes: int) -> None:
    from blockd.core.enforcement import NftAction
    from blockd.nft import netlink, ruleset

    key = (4, NftAction.REJECT)
    nets = [ipaddress.IPv4Network(((45 << 24) + (i << 8), 24)) for i in range(prefixes)]
    t0 = time.perf_counter()
    netlink.apply(ruleset.plan(ruleset.diff({}, {key: set(nets)}), table_exists=False))
    full = time.perf_counter() - t0
    t0 = time.perf_counter()
    current = {key: set(netlink.read_set(ruleset.TABLE, ruleset.SETS[key], 4))}
    read = time.perf_counter() - t0
    assert len(current[key]) == prefixes, len(current[key])
    one = ipaddress.IPv4Network("93.184.216.0/24")
    t0 = time.perf_counter()  # what the daemon does for a journal entry: that change only
    netlink.apply(ruleset.plan([ruleset.Change(key, (one,), ())], table_exists=True))
    single = time.perf_counter() - t0
    two = ipaddress.IPv4Network("93.184.217.0/24")
    t0 = time.perf_counter()  # what `blockd nft apply` does: diff everything, then apply
    netlink.apply(ruleset.plan(ruleset.diff(current, {key: set(nets) | {one, two}}),
                               table_exists=True))
    full_diff = time.perf_counter() - t0
    print(f"{prefixes} prefixes from empty: {full * 1000:.0f} ms (goal < 2000 ms)")
    print(f"read back {prefixes} prefixes with counters: {read * 1000:.0f} ms")
    print(f"one element on top: {single * 1000:.1f} ms (goal < 50 ms)")
    print(f"one element on top via a full diff of {prefixes}: {full_diff * 1000:.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--prefixes", type=int, default=100_000)
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        inside(args.prefixes)
        return
    name = f"blockd-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, sys.executable, __file__, "--inside",
                        "--prefixes", str(args.prefixes)], check=True)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


if __name__ == "__main__":
    main()
