"""Real resolvers from Debian packages as secondaries of `blockd serve rpz`: Unbound with
an ``rpz:`` clause and BIND 9 ``named`` with ``response-policy``, each a subprocess on a
free loopback port in a temp dir, forwarding everything to an in-process stub (the
test's "internet"), never to the real one. Stopped (killed if need be) on exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
from daemons import free_port

NOTICE = "127.0.0.80"


class Engine:
    """A resolver process consuming the policy zone ``zone`` from ``primary``."""

    kind = "engine"

    def __init__(self, workdir: Path, zone: str, primary: int, stub: int) -> None:
        self.dir = workdir
        self.zone = zone
        self.primary = primary
        self.stub = stub
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{self.kind}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Engine:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.dir, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.kind} exited {self.proc.returncode}:\n"
                                     f"{self.log()}")
            try:
                self.ask("ok.example", timeout=0.5)
                return self
            except (dns.exception.Timeout, OSError):
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"{self.kind} did not answer within 20 s:\n{self.log()}")

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def ask(self, name: str, rdtype: str = "A", timeout: float = 2.0) -> dns.message.Message:
        q = dns.message.make_query(name, rdtype)
        return dns.query.udp(q, "127.0.0.1", port=self.port, timeout=timeout)

    def answer(self, name: str) -> set[str]:
        """The A records the engine gives for ``name``."""
        r = self.ask(name)
        return {str(rr) for rrset in r.answer for rr in rrset if rrset.rdtype == 1}

    def blocked(self, name: str) -> bool:
        return NOTICE in self.answer(name)

    def wait_blocked(self, name: str, want: bool, limit: float = 5.0) -> float:
        """Seconds until ``name`` is (not) answered with the notice address; the issue's
        deadline is 5 s."""
        start = time.monotonic()
        while True:
            if self.blocked(name) == want:
                return time.monotonic() - start
            if time.monotonic() - start > limit:
                raise AssertionError(
                    f"{self.kind}: {name} still {'not ' if want else ''}blocked after "
                    f"{limit} s; answer {self.answer(name)}\n{self.log()[-3000:]}")
            time.sleep(0.05)


class Unbound(Engine):
    kind = "unbound"

    def command(self) -> list[str]:
        self.control = free_port()
        conf = self.dir / "unbound.conf"
        conf.write_text(f"""
server:
    interface: 127.0.0.1
    port: {self.port}
    do-daemonize: no
    use-syslog: no
    logfile: ""
    verbosity: 1
    log-time-ascii: yes
    username: ""
    chroot: ""
    directory: "{self.dir}"
    pidfile: "{self.dir}/unbound.pid"
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    module-config: "respip validator iterator"
    qname-minimisation: no
    do-ip6: no
remote-control:
    control-enable: yes
    control-use-cert: no
    control-interface: 127.0.0.1
    control-port: {self.control}
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@{self.stub}
rpz:
    name: "{self.zone}"
    primary: 127.0.0.1@{self.primary}
    allow-notify: 127.0.0.1
    zonefile: "{self.dir}/rpz.zone"
    rpz-log: yes
    rpz-log-name: "blockd"
""")
        self.conf = conf
        check = subprocess.run(["unbound-checkconf", str(conf)], capture_output=True,
                               text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        return ["unbound", "-d", "-c", str(conf)]

    def serial(self) -> int | None:
        """The serial Unbound holds for the zone (`unbound-control list_auth_zones`)."""
        out = subprocess.run(["unbound-control", "-c", str(self.conf), "list_auth_zones"],
                             capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            parts = line.split()
            if parts and parts[0].rstrip(".") == self.zone.rstrip(".") and "serial" in parts:
                return int(parts[parts.index("serial") + 1])
        return None


class Bind(Engine):
    kind = "named"
    key: tuple[str, str] | None = None  # (name, base64 secret): sign transfers with it

    def command(self) -> list[str]:
        zone = self.zone.rstrip(".")
        conf = self.dir / "named.conf"
        keys = signed = ""
        if self.key is not None:  # on the primary only: the stub shares its address
            name, secret = self.key
            keys = f'key "{name}" {{ algorithm hmac-sha256; secret "{secret}"; }};\n'
            signed = f' key "{name}"'

        conf.write_text(keys + f"""
options {{
    directory "{self.dir}";
    pid-file none;
    session-keyfile none;
    managed-keys-directory "{self.dir}";
    listen-on port {self.port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion yes;
    allow-query {{ 127.0.0.1; }};
    allow-recursion {{ 127.0.0.1; }};
    forwarders {{ 127.0.0.1 port {self.stub}; }};
    forward only;
    dnssec-validation no;
    qname-minimization off;
    notify no;
    response-policy {{ zone "{zone}" min-update-interval 0; }} qname-wait-recurse no;
}};
controls {{ }};
zone "{zone}" {{
    type secondary;
    primaries {{ 127.0.0.1 port {self.primary}{signed}; }};
    file "{self.dir}/rpz.db";
    allow-notify {{ 127.0.0.1; }};
}};
""")
        check = subprocess.run(["named-checkconf", str(conf)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        return ["named", "-g", "-c", str(conf), "-n", "1"]

    def serial(self) -> int | None:
        """The serial named reports in its log for the last transfer of the zone."""
        found = None
        for line in self.log().splitlines():
            if "Transfer completed" in line and "serial " in line:
                found = int(line.rsplit("serial ", 1)[1].split(")")[0])
        return found


class Primary:
    """`blockd serve rpz` as a process, with the status line it printed."""

    def __init__(self, db: Path, config: Path, *extra: str) -> None:
        env = {**os.environ, "BLOCKD_CONFIG": str(config), "BLOCKD_ACTOR": "tester"}
        self.log: Any = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "blockd", "serve", "rpz", "--db", str(db),
             "--listen", "127.0.0.1:0", *extra],
            stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise AssertionError(f"serve rpz did not start: {line}{self.stderr()}")
        self.line = line
        self.port = int(line.split("listening on ", 1)[1].split(" ", 1)[0].rsplit(":", 1)[1])

    def stderr(self) -> str:
        self.log.seek(0)
        return str(self.log.read())

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()
        err = self.stderr()
        self.log.close()
        return err
