"""Idle connections cannot take the notice server down: caps, idle timeouts, shedding.

The registry is driven with an injected clock; the server on real loopback sockets, in
process (idle timeouts on the fast path and after a hand-over) and, for the flood of
20,000 idle connections, as a `blockd serve http` process with a small file limit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import Http
from test_web_site import NOW, ORDERS

from blockd.config import default_policies_dir, load_policies
from blockd.core.index import compile_index
from blockd.web.app import NoticeSettings, NoticeSite
from blockd.web.connections import Connections
from blockd.web.server import NoticeServer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Closable:
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_one_client_address_is_capped_others_are_not() -> None:
    reg = Connections(max_total=100, max_per_client=3, clock=Clock())
    socks = [Closable() for _ in range(4)]
    conns = [reg.admit("192.0.2.1", s.close) for s in socks]
    assert conns[3] is None and all(conns[:3])
    assert reg.stats.shed_per_client == 1
    assert reg.admit("192.0.2.2", Closable().close) is not None
    assert reg.per_client == {"192.0.2.1": 3, "192.0.2.2": 1} and reg.open == 4
    conn = conns[0]
    assert conn is not None
    reg.gone(conn)
    reg.gone(conn)  # reported twice (both sides closed): counted once
    assert reg.per_client["192.0.2.1"] == 2 and reg.open == 3
    assert reg.admit("192.0.2.1", Closable().close) is not None


def test_when_full_the_longest_idle_connection_makes_room() -> None:
    clock = Clock()
    reg = Connections(max_total=3, max_per_client=3, clock=clock)
    socks = [Closable() for _ in range(3)]
    conns = []
    for s in socks:
        conns.append(reg.admit("198.51.100.1", s.close))
        clock.now += 1
    assert all(conns)
    reg.busy(conns[0])  # a request is being answered: never evicted for being idle
    newcomer = Closable()
    assert reg.admit("203.0.113.9", newcomer.close) is not None
    assert [s.closed for s in socks] == [0, 1, 0]  # the oldest *idle* one
    reg.gone(conns[1])  # its connection_lost
    reg.busy(conns[2])
    for c in reg._idle.copy():
        reg.busy(c)
    refused = Closable()
    assert reg.admit("203.0.113.10", refused.close) is None  # full and nothing idle
    assert reg.stats.shed_full == 2


def test_idle_connections_are_swept_and_answers_restart_the_clock() -> None:
    async def scenario() -> None:
        clock = Clock()
        reg = Connections(max_total=10, max_per_client=10, idle_timeout=5.0, clock=clock)
        quiet, chatty, slow = Closable(), Closable(), Closable()
        c_quiet = reg.admit("a", quiet.close)
        c_chatty = reg.admit("b", chatty.close)
        c_slow = reg.admit("c", slow.close)
        assert c_quiet and c_chatty and c_slow
        clock.now = 4.0
        reg.idle(c_chatty)  # answered at t=4: idle again from now
        # c_slow sends bytes but never completes a request: nothing resets its clock
        clock.now = 5.5
        reg._sweep()
        assert (quiet.closed, chatty.closed, slow.closed) == (1, 0, 1)
        clock.now = 9.5
        reg._sweep()
        assert chatty.closed == 1 and reg.stats.idle_closed == 3
        reg.stop()

    asyncio.run(scenario())


def test_shedding_is_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    reg = Connections(max_total=1, max_per_client=1, clock=clock)
    assert reg.admit("a", Closable().close) is not None
    reg.busy(next(iter(reg._idle)))
    with caplog.at_level(logging.WARNING, logger="blockd.http"):
        for _ in range(1000):
            assert reg.admit("b", Closable().close) is None
        clock.now = 61.0
        assert reg.admit("b", Closable().close) is None
    lines = [r.getMessage() for r in caplog.records if "shedding" in r.getMessage()]
    assert len(lines) == 2
    assert "1000 since the last report" in lines[1]


def test_the_default_caps_stay_below_the_file_limit() -> None:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    reg = Connections()
    assert reg.max_total < soft and reg.max_per_client <= reg.max_total // 8 + 16


# -- on real sockets, in process -------------------------------------------------------

def site() -> NoticeSite:
    return NoticeSite(lambda: compile_index(ORDERS, NOW),
                      load_policies(default_policies_dir()),
                      default_policies_dir() / "notices",
                      NoticeSettings(notice_url="https://isp.example/blocking"))


def closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False


GET = b"GET / HTTP/1.1\r\nHost: allofmp3.com\r\n\r\n"


@pytest.mark.parametrize("path", ["fast", "aiohttp"])
def test_an_idle_keep_alive_connection_is_closed(path: str) -> None:
    """After an answer, a connection that asks nothing more is closed: on the fast path
    by the registry, after a hand-over to aiohttp by aiohttp's keep-alive timeout."""
    async def scenario() -> tuple[bool, bool, bytes]:
        server = NoticeServer(site(), (("127.0.0.1", 0),),
                              connections=Connections(idle_timeout=1.0))
        [(_, port, _)] = await server.start()
        request = GET if path == "fast" else GET.replace(b"\r\n\r\n",
                                                         b"\r\nX-Odd: 1\r\n\r\n")

        def client() -> tuple[bool, bool, bytes]:
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(request)
                sock.settimeout(3)
                first = sock.recv(65536)
                return closed_by_server(sock, 0.5), closed_by_server(sock, 8.0), first

        try:
            return await asyncio.to_thread(client)
        finally:
            await server.stop()

    early, later, first = asyncio.run(scenario())
    assert first.startswith(b"HTTP/1.1 451 ")
    assert not early and later


def test_a_connection_that_never_completes_a_request_is_closed() -> None:
    async def scenario() -> bool:
        server = NoticeServer(site(), (("127.0.0.1", 0),),
                              connections=Connections(idle_timeout=1.0))
        [(_, port, _)] = await server.start()
        def client() -> bool:
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: allo")  # and then nothing more
                return closed_by_server(sock, 4.0)

        try:
            return await asyncio.to_thread(client)
        finally:
            await server.stop()

    assert asyncio.run(scenario())


# -- 20,000 idle connections against the real daemon -------------------------------------

FLOOD = """
import contextlib, resource, socket, sys
port, first, count = (int(a) for a in sys.argv[1:])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # an ordinary user's soft is 1024
held = []
for i in range(first, first + count):  # 200 connections per source address
    s = socket.socket()
    s.bind((f"127.0.{1 + i // 200 // 250}.{2 + (i // 200) % 250}", 0))
    s.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        s.connect(("127.0.0.1", port))
    held.append(s)
print("holding", len(held), flush=True)
sys.stdin.read()  # until the test is done
"""


def test_twenty_thousand_idle_connections_do_not_lock_subscribers_out(notice: Http) -> None:
    """Two processes hold 10,000 idle connections each, from 100 source addresses, at a
    `blockd serve http` limited to 4,096 open files; subscribers still get their page."""
    env = {k: v for k, v in os.environ.items() if k != "BLOCKD_CONFIG"}

    def small_limit() -> None:  # the daemon: 4,096 files, as on many hosts
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))

    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "blockd", "serve", "http", "--db", str(notice.db), "--listen",
         "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=log, text=True, env=env,
        preexec_fn=small_limit)
    floods: list[subprocess.Popen[str]] = []
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = int(line.split("http://127.0.0.1:", 1)[1].split("/", 1)[0])
        for first in (0, 10_000):
            floods.append(subprocess.Popen(
                [sys.executable, "-c", FLOOD, str(port), str(first), "10000"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for f in floods:
            assert f.stdout is not None and f.stdout.readline().strip() == "holding 10000"
        answered, times = 0, []
        for _ in range(200):  # subscribers' browsers, from another address
            t = time.monotonic()
            status, _, _ = Http(port, notice.db).get("allofmp3.com")
            times.append(time.monotonic() - t)
            answered += status == 451
        assert answered == 200
        times.sort()
        print(f"\n20k idle: p50 {times[100] * 1000:.1f} ms, p99 {times[198] * 1000:.1f} ms")
    finally:
        for f in floods:
            f.communicate(timeout=30)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    log.seek(0)
    text = log.read()
    log.close()
    assert proc.returncode == 0, text
    shedding = [x for x in text.splitlines() if "shedding connections" in x]
    assert 1 <= len(shedding) <= 2, text[-2000:]  # once a minute, not once per socket


def test_the_daemon_raises_its_soft_file_limit(notice: Http) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BLOCKD_CONFIG"}

    def low_soft() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096))

    proc = subprocess.Popen(
        [sys.executable, "-m", "blockd", "serve", "http", "--db", str(notice.db), "--listen",
         "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=env, preexec_fn=low_soft)
    try:
        assert proc.stdout is not None and "listening" in proc.stdout.readline()
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        [line] = [x for x in limits.splitlines() if x.startswith("Max open files")]
        assert line.split()[3:5] == ["4096", "4096"]  # soft raised to the hard limit
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    assert proc.returncode == 0
