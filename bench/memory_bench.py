"""Memory and start time at 1M targets: `blockd import`, and the DNS and notice daemons
following that import live and starting fresh on the result.

Goals (issue: memory that fits at 1M): each daemon <= 300 MB RSS after following the import
and after a fresh start, a fresh start < 5 s, and `blockd import` of 1M names <= 300 MB peak.
Everything runs on loopback in a temporary directory; nothing needs root.

    python bench/memory_bench.py [--targets 1000000]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query

HOST = "127.0.0.1"
GOAL_MB = 300
GOAL_START_S = 5.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def status_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("BLOCKD_CONFIG", "BLOCKD_DB")}
    e["BLOCKD_ACTOR"] = "bench"
    return e


def blockd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "blockd", *args], env=env(), text=True,
                          capture_output=True, check=True)


def peak_of(args: list[str]) -> tuple[float, float]:
    """(peak RSS MB, seconds) of a command, polled from /proc (VmHWM at the end)."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "blockd", *args], env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while proc.poll() is None:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            peak = max(peak, status_mb(proc.pid, "VmHWM"))
        time.sleep(0.05)
    if proc.returncode != 0:
        err = proc.stderr.read() if proc.stderr else ""
        raise SystemExit(f"blockd {' '.join(args)} failed: {err}")
    return peak, time.monotonic() - start


def dns_blocked(port: int, name: str) -> bool:
    try:
        r = dns.query.udp(dns.message.make_query(name, "A"), HOST, port=port, timeout=1)
    except Exception:
        return False
    return any(str(rr) == "127.0.0.1" for rrset in r.answer for rr in rrset)


def http_blocked(port: int, name: str) -> bool:
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=2)
        conn.request("GET", "/", headers={"Host": name})
        status = conn.getresponse().status
        conn.close()
        return status == 451
    except OSError:
        return False


class Daemon:
    def __init__(self, kind: str, db: Path) -> None:
        self.kind = kind
        self.port = free_port()
        args = ["serve", kind, "--db", str(db), "--listen", f"{HOST}:{self.port}"]
        if kind == "dns":
            args += ["--upstream", f"{HOST}:{free_port()}"]
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "blockd", *args], env=env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening" not in line:
            raise SystemExit(f"{kind} did not start: {line}")

    def blocked(self, name: str) -> bool:
        return (dns_blocked if self.kind == "dns" else http_blocked)(self.port, name)

    def wait_blocked(self, name: str, limit: float) -> float:
        t0 = time.monotonic()
        while not self.blocked(name):
            if time.monotonic() - t0 > limit:
                raise SystemExit(f"{self.kind}: {name} not blocked after {limit} s")
            time.sleep(0.1)
        return time.monotonic() - self.started

    def settle(self, seconds: float = 60.0) -> float:
        """RSS once it stops changing (the background proof of the tables is done)."""
        last, stable_since = -1.0, time.monotonic()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            now = status_mb(self.proc.pid, "VmRSS")
            if abs(now - last) > 2:
                last, stable_since = now, time.monotonic()
            elif time.monotonic() - stable_since > 3:
                break
            time.sleep(0.5)
        return last

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=60)


def line(what: str, value: float, unit: str, goal: float) -> None:
    ok = "meets" if value <= goal else "MISSES"
    print(f"{what:<52} {value:8.1f} {unit:<3} (goal <= {goal:g} {unit}: {ok})")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--targets", type=int, default=1_000_000)
    args = ap.parse_args()
    n = args.targets
    with tempfile.TemporaryDirectory(prefix="blockd-mem-") as name:
        tmp = Path(name)
        db = tmp / "blockd.db"
        names = tmp / "names.txt"
        names.write_text("".join(f"site{i}.bench{i % 997}.example\n" for i in range(n)))
        blockd("init", "--db", str(db))
        blockd("order", "add", "MEM-1", "--authority", "Bench Court", "--issued",
               "2026-01-01", "first.bench.example", "--db", str(db))
        daemons = [Daemon("dns", db), Daemon("http", db)]
        for d in daemons:
            d.wait_blocked("first.bench.example", 30)
        peak, took = peak_of(["import", str(names), "--format", "list", "--order", "MEM-1",
                              "--db", str(db)])
        print(f"# {n} targets, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
              f"Python {sys.version.split()[0]}")
        line(f"blockd import of {n} names: peak RSS", peak, "MB", GOAL_MB)
        print(f"{'  (import took)':<52} {took:8.1f} s")
        last = f"site{n - 1}.bench{(n - 1) % 997}.example"
        for d in daemons:
            t0 = time.monotonic()
            while not d.blocked(last):
                if time.monotonic() - t0 > 600:
                    raise SystemExit(f"{d.kind} did not follow the import")
                time.sleep(0.2)
            print(f"{'  (' + d.kind + ' followed the import in)':<52} "
                  f"{time.monotonic() - t0:8.1f} s")
            line(f"{d.kind} after following the import: RSS", d.settle(), "MB", GOAL_MB)
            line(f"{d.kind} after following the import: peak RSS",
                 status_mb(d.proc.pid, "VmHWM"), "MB", GOAL_MB)
            d.stop()
        for kind in ("dns", "http"):
            d = Daemon(kind, db)
            ready = d.wait_blocked(last, 120)
            line(f"{kind} fresh start: ready (first blocked answer)", ready, "s", GOAL_START_S)
            line(f"{kind} fresh start: RSS at ready", status_mb(d.proc.pid, "VmRSS"), "MB",
                 GOAL_MB)
            line(f"{kind} fresh start: RSS after the proof", d.settle(), "MB", GOAL_MB)
            d.stop()


if __name__ == "__main__":
    main()
