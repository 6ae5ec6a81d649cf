"""The RPZ primary at 1M targets: AXFR time and the daemon's peak RSS, and IXFR time for
a one-target change on top of it; how long a change takes to get its serial while the
daemon's start-up proof of the tables runs, and after.

Goals (issue 13): AXFR of 1M targets under 20 s, IXFR of a one-target change under
50 ms. A `blockd serve rpz` process on loopback in a temporary directory; the client is a
plain socket that reads the length-prefixed messages (so the figure is the server's, not
a client library's parsing) and stops at the closing SOA (RFC 5936 2.2: the SOA again).

    python bench/rpz_bench.py [--targets 1000000]
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rrset

HOST = "127.0.0.1"
ZONE = "rpz.blockd."
GOAL_AXFR_S = 20.0
GOAL_IXFR_MS = 50.0


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("BLOCKD_CONFIG", "BLOCKD_DB")}
    e["BLOCKD_ACTOR"] = "bench"
    return e


def blockd(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "blockd", *args], env=env(), text=True,
                   capture_output=True, check=True)


def vm(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def read(sock: socket.socket, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise SystemExit("connection closed mid-transfer")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def transfer(port: int, query: dns.message.Message) -> tuple[float, int, int]:
    """(seconds, messages, records) of one transfer, until the closing SOA."""
    wire = query.to_wire()
    with socket.create_connection((HOST, port), timeout=60) as sock:
        start = time.perf_counter()
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        messages = records = 0
        tail = b""
        while True:
            (length,) = struct.unpack("!H", read(sock, 2))
            data = read(sock, length)
            messages += 1
            count = struct.unpack("!H", data[6:8])[0]
            records += count
            if messages == 1:  # the opening SOA: its numbers end the closing one too
                first = dns.message.from_wire(data, xfr=True, one_rr_per_rrset=True)
                soa = first.answer[0][0]
                tail = struct.pack("!5I", soa.serial, soa.refresh, soa.retry, soa.expire,
                                   soa.minimum)
                if count == 1:  # IXFR, up to date: the SOA alone
                    break
            if data.endswith(tail):  # a policy record never ends with those 20 bytes
                break
        return time.perf_counter() - start, messages, records


def proof(log: Path) -> str:
    """Whether the daemon's start-up proof of the tables had finished (its log line)."""
    for line in log.read_text(errors="replace").splitlines():
        if "order tables proven against the journal" in line:
            seconds = line.split("seconds=", 1)[1].split()[0]
            return f"finished (it took {seconds} s)"
    return "still running"


def wait_for_proof(log: Path, proc: subprocess.Popen[str], limit: float = 600.0) -> None:
    """Until the daemon logs the end of its start-up proof (or ``limit`` seconds)."""
    deadline = time.monotonic() + limit
    while proof(log) == "still running" and proc.poll() is None:
        if time.monotonic() > deadline:
            print(f"the proof did not finish in {limit:.0f} s")
            return
        time.sleep(0.2)


def soa_serial(port: int) -> int:
    r = dns.query.udp(dns.message.make_query(ZONE, "SOA"), HOST, port=port, timeout=5)
    return int(r.answer[0][0].serial)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", type=int, default=1_000_000)
    args = ap.parse_args()
    n = args.targets
    with tempfile.TemporaryDirectory(prefix="blockd-rpz-bench-") as tmp:
        db = Path(tmp) / "blockd.db"
        names = Path(tmp) / "names.txt"
        names.write_text("".join(f"n{i}.bench-clone.example\n" for i in range(n)))
        t = time.monotonic()
        blockd("init", "--db", str(db))
        blockd("order", "add", "B-1", "--authority", "Bench Court", "--issued", "2024-01-01",
               "seed.example", "--db", str(db))
        blockd("import", "--format", "list", "--order", "B-1", str(names), "--db", str(db))
        print(f"store: {n:,} targets imported in {time.monotonic() - t:.1f} s")

        t = time.monotonic()
        log = Path(tmp) / "serve.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "blockd", "serve", "rpz", "--db", str(db), "--listen",
             f"{HOST}:0"], env=env(), stdout=subprocess.PIPE, stderr=log.open("w"),
            text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if "listening on" not in line:
                raise SystemExit(f"serve rpz did not start: {line}")
            port = int(line.split("listening on ", 1)[1].split(" ", 1)[0].rsplit(":", 1)[1])
            serving = time.monotonic()
            print(f"serve rpz: serving in {serving - t:.1f} s, RSS "
                  f"{vm(proc.pid, 'VmRSS'):.0f} MB")

            seconds, messages, records = transfer(port, dns.message.make_query(ZONE, "AXFR"))
            peak = vm(proc.pid, "VmHWM")
            ok = "ok" if seconds < GOAL_AXFR_S else "OVER GOAL"
            print(f"AXFR: {records:,} records in {messages:,} messages, {seconds:.2f} s "
                  f"(goal < {GOAL_AXFR_S:.0f} s: {ok}); daemon peak RSS {peak:.0f} MB")

            # the first changes after a start come while the daemon's background proof of
            # the tables (a replay of the journal) runs; the third right after it has
            # finished, the fourth in the steady state
            for label, target in (("first", "one-more.example"), ("second", "two-more.example"),
                                  ("third", "three-more.example"),
                                  ("fourth", "four-more.example")):
                if label == "third":
                    wait_for_proof(log, proc)
                before = soa_serial(port)
                t = time.monotonic()
                blockd("order", "target", "add", "B-1", target, "--db", str(db))
                committed = time.monotonic()
                while soa_serial(port) == before:
                    time.sleep(0.01)
                done = time.monotonic()
                print(f"{label} change: new serial {done - committed:.2f} s after the CLI "
                      f"returned (the CLI itself {committed - t:.2f} s), "
                      f"{committed - serving:.1f} s after serving began; proof of the "
                      f"tables {proof(log)}; RSS {vm(proc.pid, 'VmRSS'):.0f} MB")
            q = dns.message.make_query(ZONE, "IXFR")
            q.authority = [dns.rrset.from_text(ZONE, 0, "IN", "SOA",
                                               f"localhost. h. {before} 1 1 1 1")]
            runs = []
            for _ in range(5):
                seconds, messages, records = transfer(port, q)
                runs.append(seconds * 1000)
            best, worst = min(runs), max(runs)
            ok = "ok" if worst < GOAL_IXFR_MS else "OVER GOAL"
            print(f"IXFR of a one-target change on {n:,}: {records} records in {messages} "
                  f"message(s), {best:.1f} ms best, {worst:.1f} ms worst of 5 "
                  f"(goal < {GOAL_IXFR_MS:.0f} ms: {ok})")
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
