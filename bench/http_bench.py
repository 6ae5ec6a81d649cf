#!/usr/bin/env python3
"""Notice server benchmark: blockd's 451 page against nginx serving the same page.

Starts blockd ``serve http`` (one worker) with the AllofMP3 order and nginx (one worker)
with the page blockd renders saved as a static file, both on 127.0.0.1 and pinned to CPU 0,
then runs wrk (pinned to CPU 1) against each and prints requests/s and the ratio.

    python bench/http_bench.py [--seconds 10] [--connections 50]
Needs Debian's nginx-light and wrk. Sends traffic to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
SITE = "www.allofmp3.com"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") else []


def wait_http(port: int, host: str) -> bytes:
    deadline = time.monotonic() + 30
    while True:
        request = urllib.request.Request(f"http://{HOST}:{port}/", headers={"Host": host})
        try:
            with urllib.request.urlopen(request, timeout=2) as r:
                return bytes(r.read())
        except urllib.error.HTTPError as exc:  # 451 is the answer we want
            body = exc.read()
            exc.close()
            return bytes(body)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def wrk(port: int, seconds: float, connections: int) -> float:
    out = subprocess.run(
        [*pin(1), "wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "-H",
         f"Host: {SITE}", "-H", "Accept-Language: da", f"http://{HOST}:{port}/"],
        capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise RuntimeError(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--connections", type=int, default=50)
    args = ap.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists() or not shutil.which("wrk"):
        sys.exit("needs nginx and wrk: apt-get install nginx-light wrk")
    with tempfile.TemporaryDirectory(prefix="blockd-http-bench-") as name:
        tmp = Path(name)
        db = tmp / "blockd.db"
        env = {k: v for k, v in os.environ.items() if k != "BLOCKD_CONFIG"}
        blockd = [sys.executable, "-m", "blockd"]
        subprocess.run([*blockd, "init", "--db", str(db)], check=True, env=env,
                       capture_output=True)
        subprocess.run([*blockd, "order", "add", "FI-15124/2006", "--db", str(db), "--policy",
                        "dk", "--authority", "Copenhagen City Court", "--issued", "2006-10-25",
                        "--requested-by", "IFPI Danmark", "allofmp3.com"],
                       check=True, env=env, capture_output=True)
        bd_port, ng_port = free_port(), free_port()
        proc = subprocess.Popen([*pin(0), *blockd, "serve", "http", "--db", str(db),
                                 "--listen", f"{HOST}:{bd_port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            page = wait_http(bd_port, SITE)
            (tmp / "www").mkdir()
            (tmp / "www" / "index.html").write_bytes(page)
            conf = tmp / "nginx.conf"
            conf.write_text(
                f"worker_processes 1;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\n"
                "daemon off;\nevents { worker_connections 1024; }\n"
                "http {\n  access_log off;\n"
                f"  client_body_temp_path {tmp}/body;\n  proxy_temp_path {tmp}/proxy;\n"
                f"  fastcgi_temp_path {tmp}/fcgi;\n  uwsgi_temp_path {tmp}/uwsgi;\n"
                f"  scgi_temp_path {tmp}/scgi;\n"
                f"  server {{\n    listen {HOST}:{ng_port};\n    root {tmp}/www;\n"
                "    default_type text/html;\n    add_header Cache-Control no-store;\n"
                "  }\n}\n")
            ng = subprocess.Popen([*pin(0), nginx, "-c", str(conf), "-p", str(tmp)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_http(ng_port, SITE)
                wrk(bd_port, 2, args.connections)  # warm-up
                nginx_rps = wrk(ng_port, args.seconds, args.connections)
                blockd_rps = wrk(bd_port, args.seconds, args.connections)
            finally:
                ng.send_signal(signal.SIGQUIT)
                ng.wait(10)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
    print(f"page: {len(page)} bytes; wrk -t1 -c{args.connections} -d{int(args.seconds)}s")
    print(f"nginx  {nginx_rps:>10.0f} req/s")
    print(f"blockd {blockd_rps:>10.0f} req/s   ratio {blockd_rps / nginx_rps:.2f}  (goal >= 0.50)")


if __name__ == "__main__":
    main()
