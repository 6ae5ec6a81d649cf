#!/usr/bin/env python3
"""DNS benchmark: blockd against unbound and dnsmasq with the same 100k-domain blocklist,
in the same run.

Starts, all on 127.0.0.1:
  * an upstream unbound answering every name under ``bench.`` (the "internet");
  * the anchors: unbound (1 thread, the blocklist as ``local-zone redirect`` entries) and
    dnsmasq (the engine Pi-hole runs, the list as ``address=/name/notice`` lines), both
    forwarding the rest to the upstream;
  * blockd ``serve dns`` with the same blocklist in a fresh store, forwarding likewise.
Then runs dnsperf against each and prints QPS, p50/p99 latency and blockd's ratio to
each anchor:
  * blocked, each name once: 400k distinct names under the blocked domains (bare,
    ``www.``, ``m.``, ``cdn.``), shuffled, sent once (``dnsperf -n 1``): no memo can
    replay them;
  * blocked (memo): 200k queries drawn from the list, replayed for the whole run: what a
    replay memo answers, named so;
  * zipf mix: what an ISP's resolver sees, names drawn Zipf-distributed (s=1.0) from
    1M allowed names (answered by the upstream) and, for 2% of the queries, from the
    100k blocked ones; replayed for the run (popular names repeat, as in life);
  * cache hits: a small set of answerable names, warmed first;
  * cache misses: unique answerable names, never asked before.
With ``--scaling``, only blockd runs: one worker on CPU 0, then ``--workers 2`` on both
cores, on the cache-hit and the names-once workloads (dnsperf shares the cores then).
Servers are pinned to CPU 0 and dnsperf to CPU 1 when taskset is available.

    python bench/dns_bench.py [--domains 100000] [--seconds 10] [--workers 1]
Needs Debian's unbound, dnsmasq-base and dnsperf. Sends traffic to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime
from pathlib import Path

HOST = "127.0.0.1"
NOTICE = "127.0.0.80"


def free_port() -> int:
    """A loopback port free for both UDP and TCP (the servers bind both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, \
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            u.bind((HOST, 0))
            port = int(u.getsockname()[1])
            try:
                t.bind((HOST, port))
            except OSError:
                continue
            return port


def pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and os.cpu_count() else []


def domains(n: int) -> list[str]:
    rnd = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return [f"{''.join(rnd.choices(alphabet, k=rnd.randint(6, 12)))}{i}.com" for i in range(n)]


def unbound_conf(path: Path, port: int, body: str) -> Path:
    path.write_text(
        "server:\n"
        f"  interface: {HOST}\n  port: {port}\n  num-threads: 1\n"
        f"  directory: \"{path.parent}\"\n  chroot: \"\"\n  username: \"\"\n"
        f"  pidfile: \"{path.with_suffix('.pid')}\"\n  use-syslog: no\n  logfile: \"\"\n"
        "  do-not-query-localhost: no\n  access-control: 127.0.0.0/8 allow\n"
        "  msg-cache-size: 64m\n  rrset-cache-size: 128m\n  verbosity: 0\n"
        "  ratelimit: 0\n  ip-ratelimit: 0\n  minimal-responses: yes\n"
        "  module-config: \"iterator\"\n"
        + body
    )
    return path


def wait_dns(port: int, timeout: float = 60.0) -> None:
    """Until the server answers a query on UDP."""
    query = bytes.fromhex("1234010000010000000000000570726f6265000001" "0001")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            try:
                s.sendto(query, (HOST, port))
                s.recv(512)
                return
            except OSError:
                time.sleep(0.2)
    raise RuntimeError(f"no DNS server answered on port {port}")


@contextmanager
def process(cmd: list[str], name: str, **kw: object) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if proc.returncode not in (0, -signal.SIGTERM):
            err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
            print(f"{name} exited {proc.returncode}: {err}", file=sys.stderr)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def dnsperf(port: int, qfile: Path, seconds: float, clients: int = 4,
            once: bool = False) -> tuple[float, float, float]:
    """QPS, p50 and p99 latency (ms) from dnsperf's verbose per-query output; ``once``:
    through the file one time (every query distinct), else replayed for ``seconds``."""
    limit = ["-n", "1"] if once else ["-l", str(seconds)]
    out = subprocess.run(
        [*pin(1), "dnsperf", "-s", HOST, "-p", str(port), "-d", str(qfile), "-c",
         str(clients), *limit, "-q", "200", "-v"],
        capture_output=True, text=True, check=True,
    ).stdout
    latencies: list[float] = []
    qps = 0.0
    for line in out.splitlines():
        parts = line.split()
        if line.startswith(">") and len(parts) >= 5:
            with suppress(ValueError):
                latencies.append(float(parts[-1]))
        elif "Queries per second:" in line:
            qps = float(parts[-1])
    latencies.sort()
    if not latencies:
        return qps, float("nan"), float("nan")
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    return qps, p50, p99


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--domains", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--scaling", action="store_true",
                    help="one worker against --workers 2 (blockd only)")
    ap.add_argument("--hits-flush", type=float, default=None, metavar="SECONDS",
                    help="blockd's [hits] flush_interval [default: its configuration's]")
    ap.add_argument("--rss-only", action="store_true",
                    help="only start blockd with the blocklist and report its memory "
                         "(e.g. --domains 1000000; no unbound needed)")
    args = ap.parse_args()
    for tool in ("unbound", "dnsperf", "dnsmasq"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} not found: apt-get install unbound dnsmasq-base dnsperf")
    unbound = shutil.which("unbound") or "/usr/sbin/unbound"
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"

    from blockd.core.model import OrderRecord, Target, TargetKind
    from blockd.store.store import Store

    blocked = domains(args.domains)
    with tempfile.TemporaryDirectory(prefix="blockd-bench-") as tmp_name:
        tmp = Path(tmp_name)
        # the store: one order with every domain (the guard is the CLI's job, not measured)
        db = tmp / "blockd.db"
        store = Store.open(str(db), create=True)
        store.init()
        now = datetime.now(UTC)
        store.add_order(OrderRecord("BENCH-1", "Bench Court", date(2026, 1, 1), now),
                        [Target(TargetKind.DOMAIN, d) for d in blocked], actor="bench", at=now)
        store.close()
        # query files
        rnd = random.Random(3)
        qblocked = tmp / "blocked.txt"
        qblocked.write_text("".join(
            f"{'www.' if i % 2 else ''}{rnd.choice(blocked)} A\n" for i in range(200_000)))
        once = [f"{prefix}{d} A\n" for d in blocked for prefix in ("", "www.", "m.", "cdn.")]
        rnd.shuffle(once)

        def blocked_once(tag: str) -> Path:  # the same names for every server
            path = tmp / f"once-{tag}.txt"
            path.write_text("".join(once))
            return path

        def zipf(tag: str) -> Path:  # the same draw for every server
            path = tmp / f"zipf-{tag}.txt"
            if not path.exists():
                draw = random.Random(11)
                allowed_w = list(itertools.accumulate(1 / k for k in range(1, 1_000_001)))
                blocked_w = list(itertools.accumulate(1 / k for k in range(1, len(blocked)
                                                                         + 1)))
                allowed = draw.choices(range(1_000_000), cum_weights=allowed_w, k=400_000)
                picks = draw.choices(blocked, cum_weights=blocked_w, k=400_000)
                path.write_text("".join(
                    f"{picks[i]} A\n" if draw.random() < 0.02 else f"a{allowed[i]}.bench A\n"
                    for i in range(400_000)))
            return path

        qhits = tmp / "hits.txt"
        qhits.write_text("".join(f"h{i % 1000}.bench A\n" for i in range(200_000)))

        def misses(tag: str) -> Path:
            path = tmp / f"miss-{tag}.txt"
            path.write_text("".join(f"m{i}.{tag}.bench A\n" for i in range(400_000)))
            return path

        up_port, ub_port, bd_port, dm_port = free_port(), free_port(), free_port(), free_port()
        if args.rss_only:
            env = {k: v for k, v in os.environ.items() if k != "BLOCKD_CONFIG"}
            with process([sys.executable, "-m", "blockd", "serve", "dns", "--db", str(db),
                          "--listen", f"{HOST}:{bd_port}", "--upstream", f"{HOST}:{up_port}"],
                         "blockd", env=env) as bd:
                t0 = time.monotonic()
                wait_dns(bd_port, 600)
                print(f"blockd with {args.domains} blocked domains: ready in "
                      f"{time.monotonic() - t0:.1f} s, RSS {rss_mb(bd.pid):.0f} MB "
                      "(goal: under 300 MB for 1M)")
            return
        upstream = unbound_conf(tmp / "upstream.conf", up_port,
                                '  local-zone: "." static\n  local-zone: "bench." redirect\n'
                                '  local-data: "bench. 3600 IN A 192.0.2.1"\n')
        anchor = unbound_conf(
            tmp / "anchor.conf", ub_port,
            "".join(f'  local-zone: "{d}" redirect\n  local-data: "{d} 30 IN A {NOTICE}"\n'
                    for d in blocked)
            + f'forward-zone:\n  name: "."\n  forward-addr: {HOST}@{up_port}\n')
        masq = tmp / "dnsmasq.conf"
        masq.write_text(
            f"port={dm_port}\nlisten-address={HOST}\nbind-interfaces\nno-resolv\nno-hosts\n"
            f"server={HOST}#{up_port}\ncache-size=10000\ndns-forward-max=5000\n"
            + "".join(f"address=/{d}/{NOTICE}\n" for d in blocked))
        config = tmp / "blockd.toml"
        config.write_text(f'[notice]\nipv4 = "{NOTICE}"\n[dns]\nrate_limit = 10000000\n'
                          'rate_burst = 10000000\n'
                          + (f"[hits]\nflush_interval = {args.hits_flush}\n"
                             if args.hits_flush is not None else ""))
        env = {**os.environ, "BLOCKD_CONFIG": str(config)}
        blockd_cmd = [*pin(0), sys.executable, "-m", "blockd", "serve", "dns", "--db", str(db),
                      "--listen", f"{HOST}:{bd_port}", "--upstream", f"{HOST}:{up_port}",
                      "--workers", str(args.workers)]
        if args.workers > 1:
            blockd_cmd = blockd_cmd[3:] if blockd_cmd[0] == "taskset" else blockd_cmd
        if args.scaling:
            scaling(args, blockd_cmd, env, upstream, up_port, bd_port, unbound, qhits,
                    blocked_once)
            return
        with process([*pin(1), unbound, "-d", "-c", str(upstream)], "upstream"), \
             process([*pin(0), unbound, "-d", "-c", str(anchor)], "unbound") as ub, \
             process([*pin(0), dnsmasq, "-k", "-C", str(masq), "--user=root"],
                     "dnsmasq") as dm, \
             process(blockd_cmd, "blockd", env=env) as bd:
            wait_dns(up_port)
            t0 = time.monotonic()
            wait_dns(ub_port, 300)
            ub_start = time.monotonic() - t0
            wait_dns(dm_port, 300)
            t0 = time.monotonic()
            wait_dns(bd_port, 300)
            bd_start = time.monotonic() - t0
            print(f"blocklist: {args.domains} domains; start-up: unbound {ub_start:.1f} s, "
                  f"blockd {bd_start:.1f} s; RSS: unbound {rss_mb(ub.pid):.0f} MB, "
                  f"dnsmasq {rss_mb(dm.pid):.0f} MB, blockd {rss_mb(bd.pid):.0f} MB")
            print(f"{'workload':<22} {'server':<8} {'QPS':>9} {'p50 ms':>8} {'p99 ms':>8} "
                  f"{'x unbound':>9} {'x dnsmasq':>9}")
            servers = (("unbound", ub_port), ("dnsmasq", dm_port), ("blockd", bd_port))
            for label in ("blocked, each name once", "blocked (memo)", "zipf mix",
                          "cache hit", "cache miss"):
                results = {}
                for server, port in servers:
                    once_only = label.startswith("blocked, each")
                    if once_only:
                        qfile = blocked_once(server)
                    elif label == "blocked (memo)":
                        qfile = qblocked
                    elif label == "zipf mix":
                        qfile = zipf("all")
                    elif label == "cache hit":
                        qfile = qhits
                        dnsperf(port, qfile, 2)  # warm the cache
                    else:
                        qfile = misses(server)
                    results[server] = dnsperf(port, qfile, args.seconds, once=once_only)
                for server, _ in servers:
                    qps, p50, p99 = results[server]
                    vs_ub = qps / results["unbound"][0] if results["unbound"][0] else 0.0
                    vs_dm = qps / results["dnsmasq"][0] if results["dnsmasq"][0] else 0.0
                    print(f"{label:<22} {server:<8} {qps:>9.0f} {p50:>8.2f} {p99:>8.2f} "
                          f"{vs_ub:>9.2f} {vs_dm:>9.2f}")
            print(f"RSS after the run: unbound {rss_mb(ub.pid):.0f} MB, dnsmasq "
                  f"{rss_mb(dm.pid):.0f} MB, blockd {rss_mb(bd.pid):.0f} MB")
    print("goals (blockd): blocked, each name once >= 0.5x unbound and >= 0.75x dnsmasq; "
          "zipf mix >= 0.5x unbound; cache hit >= 0.75x unbound; cache miss >= 0.4x "
          "unbound (one worker, one core)")


def scaling(args: argparse.Namespace, blockd_cmd: list[str], env: dict[str, str],
            upstream: Path, up_port: int, bd_port: int, unbound: str, qhits: Path,
            blocked_once: object) -> None:
    """QPS of one worker on CPU 0 against --workers 2 on both cores (goal 1.7x)."""
    base = [c for c in blockd_cmd if c not in ("taskset", "-c", "0")]
    base = base[:base.index("--workers")]
    runs = {1: [*pin(0), *base, "--workers", "1"], 2: [*base, "--workers", "2"]}
    results: dict[tuple[int, str], float] = {}
    with process([*pin(1), unbound, "-d", "-c", str(upstream)], "upstream"):
        wait_dns(up_port)
        for workers, cmd in runs.items():
            with process(cmd, "blockd", env=env):
                wait_dns(bd_port, 300)
                dnsperf(bd_port, qhits, 2)  # warm the cache
                results[(workers, "cache hit")] = dnsperf(bd_port, qhits, args.seconds)[0]
                once = blocked_once(f"scale{workers}")  # type: ignore[operator]
                results[(workers, "blocked, each name once")] = dnsperf(
                    bd_port, once, args.seconds, once=True)[0]
    print(f"{'workload':<24} {'1 worker':>10} {'2 workers':>10} {'ratio':>6}  (goal 1.7)")
    for label in ("cache hit", "blocked, each name once"):
        one, two = results[(1, label)], results[(2, label)]
        print(f"{label:<24} {one:>10.0f} {two:>10.0f} {two / one if one else 0:>6.2f}")


if __name__ == "__main__":
    main()
