"""How long the installed `blockd` takes for what engineers type most, on a store with
100k targets and a configuration file: the median of 10 runs of each, beside `python3 -c
pass` measured the same way; and `blockd check -` answering 100k names. Goals: 0.3 s
each, 5 s for 100k names.

Each command is timed twice. "memo" is the usual case: the configuration and policy
files validated by the run before are remembered (blockd/configmemo.py), as they are
from the second command after any edit. "cold" clears that memo before every run, so
each run pays for building the pydantic schemas (what the first command after an edit
costs).

    python bench/cli_bench.py [--targets 100000] [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_S = 0.3
GOAL_MANY_S = 5.0


def blockd_path() -> str:
    return str(Path(sys.executable).with_name("blockd"))


def timed(cmd: list[str], env: dict[str, str], stdin: str | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, input=stdin, text=True, capture_output=True, check=False)
    return time.perf_counter() - start


def median(cmd: list[str], env: dict[str, str], runs: int) -> float:
    return statistics.median(timed(cmd, env) for _ in range(runs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    blockd = blockd_path()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "blockd.db"
        config = Path(tmp) / "blockd.toml"
        config.write_text('[notice]\nisp_name = "Bench ISP"\n[dns]\nworkers = 1\n')
        cache = Path(tmp) / "cache"
        env = {**os.environ, "BLOCKD_DB": str(db), "BLOCKD_ACTOR": "bench",
               "BLOCKD_CONFIG": str(config), "XDG_CACHE_HOME": str(cache)}
        names = Path(tmp) / "names.txt"
        names.write_text("".join(f"site{i}.example\n" for i in range(args.targets)))
        for cmd in (["init"], ["order", "add", "BENCH-1", "--authority", "Court", "--issued",
                               "2026-01-02"],
                    ["import", str(names), "--format", "list", "--order", "BENCH-1"]):
            subprocess.run([blockd, *cmd], env=env, check=True, capture_output=True)
        base = median([sys.executable, "-c", "pass"], env, args.runs)
        print(f"# {args.targets} targets, median of {args.runs} runs; "
              f"`python3 -c pass`: {base:.3f} s")
        counter = iter(range(10**9))
        cases: list[tuple[str, list[str]]] = [
            ("blockd --help", ["--help"]),
            ("blockd check NAME", ["check", "www.site77.example"]),
            ("blockd status", ["status"]),
            ("blockd order show REF", ["order", "show", "BENCH-1"]),
        ]
        def cold(cmd: list[str]) -> float:
            shutil.rmtree(cache, ignore_errors=True)
            return timed(cmd, env)

        print(f"{'':<34} {'memo':>7}  {'cold':>7}")
        for label, cmd in cases:
            warm = median([blockd, *cmd], env, args.runs)
            fresh = statistics.median(cold([blockd, *cmd]) for _ in range(args.runs))
            print(f"{label:<34} {warm:6.3f} s {fresh:6.3f} s  "
                  f"{'ok' if warm < GOAL_S else 'MISSED'} (goal {GOAL_S} s)")
        timed([blockd, "check", "x.example"], env)  # remember the files again
        adds = [timed([blockd, "order", "target", "add", "BENCH-1",
                       f"new{next(counter)}.example"], env) for _ in range(args.runs)]
        colds = [cold([blockd, "order", "target", "add", "BENCH-1",
                       f"new{next(counter)}.example"]) for _ in range(args.runs)]
        t = statistics.median(adds)
        print(f"{'blockd order target add REF NAME':<34} {t:6.3f} s "
              f"{statistics.median(colds):6.3f} s  "
              f"{'ok' if t < GOAL_S else 'MISSED'} (goal {GOAL_S} s)")
        many = "".join(f"www.site{i}.example\n" if i % 2 else f"other{i}.example\n"
                       for i in range(100_000))
        t = timed([blockd, "check", "-"], env, stdin=many)
        print(f"{'blockd check - (100k names)':<34} {t:6.3f} s  "
              f"{'ok' if t < GOAL_MANY_S else 'MISSED'} (goal {GOAL_MANY_S} s)")


if __name__ == "__main__":
    main()
