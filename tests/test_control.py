"""Control verbs against real daemons (two DNS workers and the notice server) through
their control sockets: `blockd cache flush`, `blockd tail`, `blockd reload`."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import pytest
from daemons import free_port
from dnsstub import StubUpstream


@dataclass
class Site:
    config: Path
    db: Path
    dns_port: int
    http_port: int
    upstream: StubUpstream

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "BLOCKD_CONFIG": str(self.config)}
        return subprocess.run([sys.executable, "-m", "blockd", *args, "--db", str(self.db)],
                              capture_output=True, text=True, env=env, timeout=60,
                              check=False, input=stdin)


def config_text(dns_port: int, http_port: int, upstream: int) -> str:
    return (f'[dns]\nlisten = ["127.0.0.1:{dns_port}"]\nupstream = ["127.0.0.1:{upstream}"]\n'
            'upstream_timeout = 0.3\nrate_limit = 100000\nrate_burst = 100000\n'
            f'[notice]\nlisten = ["127.0.0.1:{http_port}"]\nipv4 = "127.0.0.80"\n'
            'resolve_cnames = false\n')


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with StubUpstream(["ok.example. 300 IN A 192.0.2.1"]) as upstream:
        dns_port, http_port = free_port(), free_port()
        config = tmp_path / "blockd.toml"
        config.write_text(config_text(dns_port, http_port, upstream.port))
        s = Site(config, tmp_path / "blockd.db", dns_port, http_port, upstream)
        assert s.run("init").returncode == 0
        assert s.run("order", "add", "DK-1", "--authority", "Court", "--issued", "2025-01-02",
                     "--policy", "dk", "allofmp3.com").returncode == 0
        env = {**os.environ, "BLOCKD_CONFIG": str(config)}
        procs = [subprocess.Popen([sys.executable, "-m", "blockd", "serve", *cmd, "--db",
                                   str(s.db)], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, env=env)
                 for cmd in (["dns", "--workers", "2"], ["http"])]
        state = tmp_path / "blockd.db-state"
        deadline = time.monotonic() + 10
        while {p.name for p in state.glob("*.sock")} != {"dns.sock", "dns.2.sock",
                                                         "http.sock"}:
            assert time.monotonic() < deadline, list(state.glob("*"))
            time.sleep(0.05)
        try:
            yield s
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=10)


def ask(site: Site, name: str) -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=site.dns_port,
                         timeout=3)


def test_sockets_are_owner_only_and_go_with_the_daemons(site: Site) -> None:
    for sock in (site.db.parent / "blockd.db-state").glob("*.sock"):
        mode = sock.stat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_cache_flush_makes_the_next_query_go_upstream(site: Site) -> None:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(20)]
    query = dns.message.make_query("ok.example", "A")
    try:  # from many source ports: both workers see it and cache it
        for sock in sockets:
            sock.sendto(query.to_wire(), ("127.0.0.1", site.dns_port))
            sock.settimeout(3)
            sock.recv(4096)
    finally:
        for sock in sockets:
            sock.close()
    asked = len([q for q in site.upstream.queries if q[1].rstrip(".") == "ok.example"])
    assert 1 <= asked <= 2  # once per worker, then from the caches
    r = site.run("cache", "flush", "OK.example", "--json")
    assert r.returncode == 0, r.stderr
    answers = json.loads(r.stdout)
    assert {a["instance"] for a in answers} == {"dns", "dns.2"}
    assert sum(a["removed"] for a in answers) == asked
    again = json.loads(site.run("cache", "flush", "ok.example", "--json").stdout)
    assert sum(a["removed"] for a in again) == 0
    ask(site, "ok.example")
    assert len([q for q in site.upstream.queries if q[1].rstrip(".") == "ok.example"]) \
        == asked + 1  # asked upstream again
    assert site.run("cache", "flush", "not a name!").returncode == 2


def test_tail_shows_each_hit_without_the_client(site: Site) -> None:
    env = {**os.environ, "BLOCKD_CONFIG": str(site.config)}
    tail = subprocess.Popen([sys.executable, "-m", "blockd", "tail", "--count", "3", "--json",
                             "--db", str(site.db)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(1.0)  # connected to every socket
    ask(site, "www.allofmp3.com")
    ask(site, "allofmp3.com")
    conn = http.client.HTTPConnection("127.0.0.1", site.http_port, timeout=5)
    conn.request("GET", "/", headers={"Host": "allofmp3.com"})
    assert conn.getresponse().status == 451
    conn.close()
    out, err = tail.communicate(timeout=20)
    assert tail.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 3
    assert sorted(line["channel"] for line in lines) == ["dns", "dns", "http"]
    assert {(line["order"], line["target"]) for line in lines} == {("DK-1", "allofmp3.com")}
    assert "127.0.0.1" not in out


def test_reload_reports_each_daemon_and_a_broken_file(site: Site) -> None:
    r = site.run("reload", "--json")
    assert r.returncode == 0, r.stderr
    assert {a["instance"] for a in json.loads(r.stdout)} == {"dns", "dns.2", "http"}
    assert all(a["ok"] for a in json.loads(r.stdout))
    good = site.config.read_text()
    site.config.write_text(good + '[log]\nlevel = "loud"\n')  # a broken configuration
    refused = site.run("reload")  # checked here first: nothing is sent
    assert refused.returncode == 2 and "log.level" in refused.stderr
    policies = site.config.with_name("policies")
    policies.mkdir()
    (policies / "dk.toml").write_text("[dns]\naction = 'explode'\n")  # a broken policy
    site.config.write_text(good + f'[policies]\ndir = "{policies}"\n')
    bad = site.run("reload")
    site.config.write_text(good)
    assert bad.returncode == 1
    assert "dns: NOT reloaded" in bad.stdout and "http: NOT reloaded" in bad.stdout
    assert ask(site, "allofmp3.com").answer[0][0].to_text() == "127.0.0.80"  # still enforcing
    assert site.run("reload").returncode == 0


def test_without_daemons_the_verbs_say_so(tmp_path: Path) -> None:
    db = tmp_path / "blockd.db"
    env = {k: v for k, v in os.environ.items() if k != "BLOCKD_CONFIG"}
    subprocess.run([sys.executable, "-m", "blockd", "init", "--db", str(db)], env=env,
                   check=True, capture_output=True)
    for verb in (["reload"], ["cache", "flush"], ["tail"]):
        r = subprocess.run([sys.executable, "-m", "blockd", *verb, "--db", str(db)], env=env,
                           capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 2 and "has a control socket" in r.stderr, (verb, r.stderr)
