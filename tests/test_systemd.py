"""The systemd units as shipped, checked by systemd's own tools (which work without systemd
as PID 1), and the sd_notify protocol as the real daemons speak it on a test socket."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blockd.cli import main

UNITS = Path(__file__).resolve().parent.parent / "systemd"
SERVICES = ["blockd-dns.service", "blockd-http.service", "blockd-nft.service",
            "blockd-rpz.service"]
MAX_EXPOSURE = 2.0


@pytest.fixture
def units(tmp_path: Path) -> Path:
    """The units with ExecStart pointing at this environment's `blockd` (verify checks
    that the command exists)."""
    here = tmp_path / "units"
    here.mkdir()
    entry = Path(sys.prefix) / "bin" / "blockd"
    assert entry.exists()
    for unit in [*SERVICES, "blockd-verify.service", "blockd-verify.timer", "blockd.target"]:
        text = (UNITS / unit).read_text().replace("/opt/blockd/bin/blockd", str(entry))
        (here / unit).write_text(text)
    return here


@pytest.mark.parametrize("unit", [*SERVICES, "blockd-verify.service", "blockd-verify.timer",
                                  "blockd.target"])
def test_unit_verifies_without_a_warning(units: Path, unit: str) -> None:
    """`systemd-analyze verify` exits 0 even on an unknown key: any output is a failure."""
    r = subprocess.run(["systemd-analyze", "verify", str(units / unit)], capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "" and r.stdout.strip() == "", r.stderr + r.stdout


def test_an_unknown_key_would_be_caught(units: Path) -> None:
    """The check above can fail: a misspelt key is reported on stderr."""
    unit = units / "blockd-dns.service"
    unit.write_text(unit.read_text().replace("NoNewPrivileges=", "NoNewPrivilege="))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                       text=True, timeout=60, check=False)
    assert "Unknown key" in r.stderr


@pytest.mark.parametrize("unit", [*SERVICES, "blockd-verify.service"])
def test_unit_exposure_is_low(units: Path, unit: str) -> None:
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", str(units / unit)],
                       capture_output=True, text=True, timeout=60, check=False)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout + r.stderr)
    assert found, r.stdout + r.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, r.stdout


def test_the_verify_timer_runs_the_self_test_hourly() -> None:
    timer = (UNITS / "blockd-verify.timer").read_text()
    assert "OnCalendar=hourly" in timer and "Persistent=true" in timer
    service = (UNITS / "blockd-verify.service").read_text()
    assert "Type=oneshot" in service
    assert "ExecStart=/opt/blockd/bin/blockd verify --textfile /var/lib/blockd/" in service
    assert "blockd-verify.timer" in (UNITS / "blockd.target").read_text()


def test_the_target_pulls_in_every_daemon() -> None:
    wants = " ".join(re.findall(r"^Wants=(.*)$", (UNITS / "blockd.target").read_text(), re.M))
    assert set(SERVICES) <= set(wants.split())
    for unit in SERVICES:
        text = (UNITS / unit).read_text()
        assert "Type=notify" in text and "WatchdogSec=" in text, unit
        assert "PartOf=blockd.target" in text and "WantedBy=blockd.target" in text, unit


def test_each_daemon_has_only_the_capability_it_needs() -> None:
    caps = {u: re.findall(r"^CapabilityBoundingSet=(.*)$", (UNITS / u).read_text(), re.M)
            for u in SERVICES}
    assert caps == {"blockd-dns.service": ["CAP_NET_BIND_SERVICE"],
                    "blockd-http.service": ["CAP_NET_BIND_SERVICE"],
                    "blockd-nft.service": ["CAP_NET_ADMIN"],
                    "blockd-rpz.service": [""]}  # 5354 by default: no capability at all
    for unit in SERVICES:
        netlink = "AF_NETLINK" in (UNITS / unit).read_text()
        assert netlink == (unit == "blockd-nft.service"), unit


def test_sysusers_and_tmpfiles_create_the_user_and_state_directory(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    subprocess.run(["systemd-sysusers", f"--root={root}",
                    str(UNITS / "sysusers.d" / "blockd.conf")], check=True, timeout=60,
                   capture_output=True)
    assert re.search(r"^blockd:x:\d+:\d+:", (root / "etc" / "passwd").read_text(), re.M)
    subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create",
                    str(UNITS / "tmpfiles.d" / "blockd.conf")], check=True, timeout=60,
                   capture_output=True)
    state = root / "var" / "lib" / "blockd"
    assert state.is_dir() and oct(state.stat().st_mode & 0o777) == "0o750"


# -- sd_notify ------------------------------------------------------------------------


class NotifySocket:
    """What systemd listens on: a datagram socket collecting every message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []

    def wait_for(self, key: str, value: str | None = None, limit: float = 20.0
                 ) -> dict[str, str]:
        deadline = time.monotonic() + limit
        seen = len(self.messages)
        while True:
            for message in self.messages[seen:]:
                if key in message and (value is None or message[key] == value):
                    return message
            seen = len(self.messages)
            if time.monotonic() > deadline:
                raise AssertionError(f"no {key}={value} among {self.messages[-5:]}")
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append(dict(line.split("=", 1) for line in data.decode().split("\n")))

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("command", [["dns", "--listen", "127.0.0.1:0"],
                                     ["http", "--listen", "127.0.0.1:0"],
                                     ["rpz", "--listen", "127.0.0.1:0"]])
def test_daemons_speak_sd_notify(tmp_path: Path, command: list[str]) -> None:
    db = tmp_path / "blockd.db"
    assert main(["init", "--db", str(db)]) == 0
    assert main(["order", "add", "FI-15124/2006", "--authority", "Copenhagen City Court",
                 "--issued", "2006-10-25", "allofmp3.com", "--db", str(db),
                 "--actor", "tester"]) == 0
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {k: v for k, v in os.environ.items() if k != "BLOCKD_CONFIG"}
    env |= {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
    proc = subprocess.Popen([sys.executable, "-m", "blockd", "serve", *command, "--db",
                             str(db)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        ready = notify.wait_for("READY", "1")
        assert "enforcing journal seq 1, 1 targets in force" in ready["STATUS"]
        for _ in range(3):  # from the event loop, at half the interval
            notify.wait_for("WATCHDOG", "1", limit=2.0)
        proc.send_signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING", "1")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        notify.wait_for("READY", "1")
        assert main(["order", "add", "UK-2", "--authority", "High Court", "--issued",
                     "2024-01-01", "mp3sparks.example", "--db", str(db), "--actor", "t"]) == 0
        status = notify.wait_for("STATUS")
        while "journal seq 2" not in status["STATUS"]:
            status = notify.wait_for("STATUS")
        proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING", "1")
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        notify.close()


def test_outside_systemd_nothing_is_sent(tmp_path: Path) -> None:
    from blockd.daemon.notify import Notifier

    n = Notifier({})
    assert not n.enabled and n.watchdog is None
    n.ready("x")  # no socket, no error
    n = Notifier({"NOTIFY_SOCKET": "@abstract", "WATCHDOG_USEC": "1000000",
                  "WATCHDOG_PID": "1"})
    assert n.enabled and n.watchdog is None  # the watchdog is another process's
