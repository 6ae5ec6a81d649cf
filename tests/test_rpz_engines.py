"""Unbound and BIND 9 as secondaries of a real `blockd serve rpz` process: they block
what is in force, pick up an order added or lifted with the CLI within 5 s (NOTIFY, then
IXFR), and unblock an order that ends by the clock without any command."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from daemons import free_port
from dnsstub import StubUpstream
from engines import NOTICE, Bind, Engine, Primary, Unbound

from blockd.cli import main

ZONE = "rpz.isp.example"
NAMES = ["ok.example", "www.blocked.example", "blocked.example", "www.added.example",
         "www.timed.example", "www.lifted.example"]


def cli(db: Path, *args: str) -> None:
    assert main([*args, "--db", str(db)]) == 0


def status(db: Path, config: Path) -> dict[str, object]:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "blockd", "--config", str(config), "rpz",
                          "status", "--json", "--db", str(db)], capture_output=True,
                         text=True, check=True)
    data = json.loads(out.stdout)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def internet() -> Iterator[StubUpstream]:
    with StubUpstream([f"{n}. 300 IN A 192.0.2.{i + 1}" for i, n in enumerate(NAMES)]) as up:
        yield up


@pytest.mark.parametrize("kind", [Unbound, Bind], ids=["unbound", "bind"])
def test_engine_follows_the_primary(kind: type[Engine], internet: StubUpstream,
                                    tmp_path: Path) -> None:
    db = tmp_path / "blockd.db"
    config = tmp_path / "blockd.toml"
    config.write_text(f'[notice]\nipv4 = "{NOTICE}"\n[rpz]\nzone = "{ZONE}"\n')
    cli(db, "init")
    cli(db, "order", "add", "R-1", "--authority", "Court", "--issued", "2024-01-01",
        "blocked.example")
    cli(db, "order", "add", "R-LIFT", "--authority", "Court", "--issued", "2024-01-01",
        "lifted.example")
    engine_port = free_port()
    primary = Primary(db, config, "--notify", f"127.0.0.1:{engine_port}")
    engine = kind(tmp_path, ZONE, primary.port, internet.port)
    engine.port = engine_port
    try:
        with engine:
            # the zone is transferred at start: what is in force is blocked, the rest not
            engine.wait_blocked("www.blocked.example", True)
            assert engine.blocked("blocked.example")
            assert engine.answer("ok.example") == {"192.0.2.1"}
            before = engine.serial()

            cli(db, "order", "add", "R-2", "--authority", "Court", "--issued", "2024-01-01",
                "added.example")
            engine.wait_blocked("www.added.example", True)  # within 5 s
            cli(db, "order", "lift", "R-LIFT", "--reason", "set aside on appeal")
            engine.wait_blocked("www.lifted.example", False)

            # an order ending by the clock: no command ends it
            until = datetime.now(UTC) + timedelta(seconds=4)
            cli(db, "order", "add", "R-T", "--authority", "Court", "--issued",
                "2024-01-01", "--until", until.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "timed.example")
            engine.wait_blocked("www.timed.example", True)
            left = (until - datetime.now(UTC)).total_seconds()
            engine.wait_blocked("www.timed.example", False, limit=max(left, 0) + 5)
            assert engine.blocked("www.blocked.example")  # the rest stays

            # the changes came as NOTIFY then IXFR: the primary saw it fetch incrementally,
            # and the engine reports the serial it holds
            data = status(db, config)
            fetched = data["secondaries"]["127.0.0.1"]["transfer"]  # type: ignore[index]
            deadline = time.monotonic() + 5
            while fetched["serial"] != data["serial"] and time.monotonic() < deadline:
                time.sleep(0.2)
                data = status(db, config)
                fetched = data["secondaries"]["127.0.0.1"]["transfer"]  # type: ignore[index]
            assert fetched["kind"] == "ixfr", fetched
            assert fetched["serial"] == data["serial"]
            notify = data["notify"][f"127.0.0.1:{engine_port}"]  # type: ignore[index]
            assert notify["acked"] is True
            deadline = time.monotonic() + 5  # the engine logs it once it has applied it
            while engine.serial() != data["serial"] and time.monotonic() < deadline:
                time.sleep(0.1)
            assert engine.serial() == data["serial"] != before
    finally:
        engine.stop()
        err = primary.stop()
    assert primary.proc.returncode == 0 and "Traceback" not in err, err


def test_bind_transfers_with_tsig(internet: StubUpstream, tmp_path: Path) -> None:
    """named signs its SOA queries and transfers with the key (``key`` in its primaries);
    the primary requires it, and signs every message of the answer and its NOTIFYs."""
    secret = base64.b64encode(bytes(range(1, 33))).decode()
    key = tmp_path / "xfr.key"
    key.write_text(f'key "blockd-xfr" {{\n\talgorithm hmac-sha256;\n\tsecret "{secret}";\n}};\n')
    db = tmp_path / "blockd.db"
    config = tmp_path / "blockd.toml"
    config.write_text(f'[notice]\nipv4 = "{NOTICE}"\n[rpz]\nzone = "{ZONE}"\n'
                      f'tsig_key = "{key}"\n')
    cli(db, "init")
    cli(db, "order", "add", "R-1", "--authority", "Court", "--issued", "2024-01-01",
        "blocked.example")
    engine_port = free_port()
    primary = Primary(db, config, "--notify", f"127.0.0.1:{engine_port}")
    engine = Bind(tmp_path, ZONE, primary.port, internet.port)
    engine.key = ("blockd-xfr", secret)
    engine.port = engine_port
    try:
        with engine:
            engine.wait_blocked("www.blocked.example", True)
            cli(db, "order", "add", "R-2", "--authority", "Court", "--issued", "2024-01-01",
                "added.example")
            engine.wait_blocked("www.added.example", True)
            data = status(db, config)
            assert data["notify"][f"127.0.0.1:{engine_port}"]["acked"] is True  # type: ignore[index]
    finally:
        engine.stop()
        err = primary.stop()
    assert primary.proc.returncode == 0 and "Traceback" not in err, err
