"""Real daemons for tests: `blockd serve dns` processes (or in-process Controllers) on
loopback, and the questions tests ask them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
from prometheus_client.parser import text_string_to_metric_families

from blockd.cli import main
from blockd.daemon.controller import Controller


@dataclass
class Daemon:
    """A resolver under test: in-process (a Controller) or a `blockd serve dns` process."""

    host: str
    port: int
    db: Path
    proc: subprocess.Popen[str] | None = None
    metrics: str = ""
    controller: Controller | None = None
    config: Path | None = None

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.controller is not None and self.controller.running

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` that carry ``labels`` (over the other
        labels: results, workers...), as prometheus_client's parser reads /metrics."""
        return metric_of(scrape(self.metrics), name, **labels)

    def healthz(self) -> tuple[int, str]:
        """(HTTP status, text) of the daemon's /healthz."""
        url = self.metrics.replace("/metrics", "/healthz")
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read().decode()

    def wait_health(self, want: str, limit: float = 5.0) -> str:
        """Wait until /healthz text contains ``want``; returns the text."""
        deadline = time.monotonic() + limit
        while True:
            status, text = self.healthz()
            if want in text:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"/healthz still says {status} {text!r}, not {want!r}")
            time.sleep(0.1)

    def is_blocked(self, name: str, timeout: float = 3.0) -> bool:
        r = self.ask(name, edns=False, timeout=timeout)
        return any(str(rr) == "127.0.0.80" for rrset in r.answer for rr in rrset)

    def ask(self, name: str, rdtype: str = "A", *, tcp: bool = False, edns: int | bool = 0,
            payload: int = 1232, want_dnssec: bool = False, timeout: float = 3.0
            ) -> dns.message.Message:
        q = dns.message.make_query(name, rdtype, use_edns=edns, payload=payload,
                                   want_dnssec=want_dnssec)
        if tcp:
            return dns.query.tcp(q, self.host, port=self.port, timeout=timeout)
        return dns.query.udp(q, self.host, port=self.port, timeout=timeout)

    def blocked_within(self, name: str, want: bool, limit: float = 1.0) -> float:
        """Seconds until the daemon's answer for ``name`` is (not) the notice address."""
        start = time.monotonic()
        while True:
            r = self.ask(name, edns=False)
            is_blocked = any(str(rr) == "127.0.0.80" for rrset in r.answer for rr in rrset)
            elapsed = time.monotonic() - start
            if is_blocked == want:
                return elapsed
            if elapsed > limit:
                raise AssertionError(f"{name}: still {'not ' if want else ''}blocked "
                                     f"after {elapsed:.2f} s")
            time.sleep(0.02)


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=3) as r:
        return str(r.read().decode())


def metric_of(text: str, name: str, **labels: str) -> float:
    """Sum of the samples ``name`` with ``labels`` in an exposition; KeyError if none."""
    found = [s.value for family in text_string_to_metric_families(text)
             for s in family.samples
             if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    if not found:
        raise KeyError(name)
    return float(sum(found))


def cli(db: Path, *args: str) -> int:
    return main([*args, "--db", str(db)])


def start_daemon(db: Path, config: Path | None, *extra: str) -> Daemon:
    assert config is not None
    env = {**os.environ, "BLOCKD_CONFIG": str(config), "BLOCKD_ACTOR": "tester"}
    listen = [] if "--listen" in extra else ["--listen", "127.0.0.1:0"]
    # stderr to a file: an unread pipe fills up and would block the daemon's logging
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed at stop
    proc = subprocess.Popen(
        [sys.executable, "-m", "blockd", "serve", "dns", "--db", str(db), *listen, *extra],
        stdout=subprocess.PIPE, stderr=log, text=True, env=env,
    )
    proc.log = log  # type: ignore[attr-defined]
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        proc.communicate()
        log.seek(0)
        message = log.read()
        log.close()
        raise AssertionError(f"daemon did not start: {line}{message}")
    where = line.split("listening on ", 1)[1].split(" ", 1)[0]
    host, port = where.rsplit(":", 1)
    d = Daemon(host, int(port), db, proc)
    if "metrics http://" in line:
        d.metrics = line.split("metrics ", 1)[1].strip()
    return d


def stop_daemon(d: Daemon) -> str:
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    try:
        d.proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        d.proc.kill()
        raise
    log = d.proc.log  # type: ignore[attr-defined]
    log.seek(0)
    err = str(log.read())
    log.close()
    assert d.proc.returncode == 0, err
    return err




def free_port() -> int:
    """A loopback port free for both UDP and TCP now (the resolver binds both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
