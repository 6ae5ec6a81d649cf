"""The daemon handles in-process: one core under several handles, reload, start failures,
graceful stop. Real SQLite file, real sockets on loopback, the real CLI for changes."""

from __future__ import annotations

import dataclasses
import http.client
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import dns.rcode
import pytest
from dnsstub import StubUpstream

from blockd.cli import main
from blockd.config import Config, load_config, load_policies
from blockd.core.model import BlockdError
from blockd.daemon.controller import Controller
from blockd.daemon.core import Core
from blockd.daemon.dns import DnsDaemon
from blockd.daemon.http import HttpDaemon
from blockd.daemon.process import reload_core
from blockd.store.store import Store

LOOPBACK = (("127.0.0.1", 0),)


@pytest.fixture
def upstream() -> Iterator[StubUpstream]:
    with StubUpstream(["ok.example. 300 IN A 192.0.2.1",
                       "alias.example. 300 IN CNAME www.allofmp3.com.",
                       "www.allofmp3.com. 300 IN A 192.0.2.66"]) as up:
        yield up


@pytest.fixture
def config(tmp_path: Path, upstream: StubUpstream) -> Config:
    db = tmp_path / "blockd.db"
    assert main(["init", "--db", str(db)]) == 0
    assert main(["order", "add", "FI-15124/2006", "--authority", "Copenhagen City Court",
                 "--issued", "2006-10-25", "--policy", "dk", "allofmp3.com",
                 "--db", str(db)]) == 0
    base = load_config(None) if not Path("/etc/blockd/blockd.toml").exists() else Config()
    base = dataclasses.replace(base, db=str(db), notice_ipv4="127.0.0.80",
                               notice_listen=LOOPBACK, hits_flush_interval=3600.0)
    return dataclasses.replace(base, dns=dataclasses.replace(
        base.dns, listen=LOOPBACK, upstream=(("127.0.0.1", upstream.port),),
        metrics=None, upstream_timeout=0.3))


def ask(port: int, name: str) -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, "A", use_edns=0), "127.0.0.1",
                         port=port, timeout=3)


def notice(port: int, host: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": host})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_dns_and_http_on_one_core_follow_one_journal(config: Config) -> None:
    """Both handles read the same live index; a change is seen by both at the next poll,
    and the hits both counted are in the store once the core stops."""
    db = config.db
    with Controller(config, lambda core: [DnsDaemon(core), HttpDaemon(core)]) as c:
        [(_, dns_port)] = c.bound["dns"]
        [(_, http_port)] = c.bound["http"]
        assert str(ask(dns_port, "www.allofmp3.com").answer[0][0]) == "127.0.0.80"
        assert notice(http_port, "www.allofmp3.com") == 451
        assert notice(http_port, "mp3sparks.com") == 404
        assert main(["order", "target", "add", "FI-15124/2006", "mp3sparks.com",
                     "--db", db]) == 0
        assert c.poll()  # what the 0.2 s loop does
        assert str(ask(dns_port, "mp3sparks.com").answer[0][0]) == "127.0.0.80"
        assert notice(http_port, "mp3sparks.com") == 451
        assert main(["order", "lift", "FI-15124/2006", "--reason", "discharged",
                     "--db", db]) == 0
        c.poll()
        assert ask(dns_port, "ok.example").rcode() == dns.rcode.NOERROR
        assert not any(str(rr) == "127.0.0.80" for rrset in ask(dns_port, "allofmp3.com").answer
                       for rr in rrset)
        assert notice(http_port, "allofmp3.com") == 503  # lifted: the shared store knows
        assert c.core is not None
        assert c.core.hits.flushed == 0  # flush interval of an hour: still in memory
    store = Store.open(db)
    try:
        counted = {(ref, target): n for _, ref, target, n in store.hits()}
    finally:
        store.close()
    # DNS 2 (www.allofmp3.com, mp3sparks.com), HTTP 2 (the same two)
    assert counted == {("FI-15124/2006", "allofmp3.com"): 2,
                       ("FI-15124/2006", "mp3sparks.com"): 2}


def test_reload_applies_acl_policies_and_keeps_the_store(config: Config, tmp_path: Path
                                                         ) -> None:
    with Controller(config, lambda core: [DnsDaemon(core)]) as c:
        [(_, port)] = c.bound["dns"]
        r = ask(port, "allofmp3.com")
        assert r.answer[0].ttl == 30  # the dk policy's TTL
        policies = tmp_path / "policies"
        policies.mkdir()
        for f in config.policies_dir.glob("*.toml"):
            text = f.read_text()
            if f.name == "dk.toml":
                text = text.replace("[dns]\naction = \"notice\"", "[dns]\naction = \"nxdomain\"")
            (policies / f.name).write_text(text)
        assert "nxdomain" in (policies / "dk.toml").read_text()
        fresh = dataclasses.replace(config, policies_dir=policies, db="/elsewhere.db")
        c.reload(fresh)
        c.poll()  # the new DNS action is compiled into the next index
        assert ask(port, "allofmp3.com").rcode() == dns.rcode.NXDOMAIN
        assert c.core is not None and c.core.config.db == config.db  # store: restart only
        c.reload(dataclasses.replace(fresh, dns=dataclasses.replace(
            fresh.dns, allow=("192.0.2.0/24",))))
        refused = ask(port, "ok.example")
        assert refused.rcode() == dns.rcode.REFUSED
        assert [o.code for o in refused.options if isinstance(o, dns.edns.EDEOption)] == [18]


def test_a_broken_configuration_on_reload_keeps_the_running_one(config: Config,
                                                                 tmp_path: Path) -> None:
    core = Core(config)
    bad = tmp_path / "bad.toml"
    bad.write_text("[dns]\nworkers = 0\n")
    assert not reload_core(core, lambda: load_config(bad))
    assert core.config is config
    assert reload_core(core, lambda: config)


def test_a_port_in_use_fails_the_start_and_leaves_nothing_running(config: Config) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = dataclasses.replace(config, notice_listen=(taken.getsockname(),))
        c = Controller(busy, lambda core: [HttpDaemon(core)])
        with pytest.raises(BlockdError, match=r"cannot listen on 127\.0\.0\.1 port"):
            c.start()
        assert not c.running


def test_an_unreadable_store_at_start_is_refused(config: Config, tmp_path: Path) -> None:
    missing = dataclasses.replace(config, db=str(tmp_path / "none.db"))
    c = Controller(missing, lambda core: [DnsDaemon(core)])
    with pytest.raises(BlockdError, match="no database at"):
        c.start()
    assert not c.running


def test_the_clock_moves_the_index_without_a_command(config: Config) -> None:
    """An order's end passes: the core's next poll drops it (time injected, no sleeping)."""
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    assert main(["order", "add", "TEMP-1", "--authority", "Court", "--issued", "2025-01-01",
                 "--until", "2030-01-01T00:00:10+00:00", "temporary.example",
                 "--db", config.db]) == 0
    enforcement = load_policies(config.policies_dir)
    with Controller(config, lambda core: [DnsDaemon(core)], enforcement=enforcement,
                    clock=lambda: now[0]) as c:
        [(_, port)] = c.bound["dns"]
        assert str(ask(port, "temporary.example").answer[0][0]) == "127.0.0.80"
        now[0] = datetime(2030, 1, 1, 0, 0, 11, tzinfo=UTC)
        assert c.poll()
        assert not any(str(rr) == "127.0.0.80"
                       for rrset in ask(port, "temporary.example").answer for rr in rrset)


def test_rows_the_journal_does_not_prove_are_not_enforced(config: Config) -> None:
    """A target inserted with sqlite3 is not blocked, one deleted stays blocked, and the
    daemon says it is unhealthy until the tables match the journal again."""
    import sqlite3

    con = sqlite3.connect(config.db)
    con.execute("INSERT INTO targets (order_id, kind, value, match, added_seq, forced) "
                "VALUES (1, 'domain', 'smuggled.example', 'subtree', 1, false)")
    con.execute("DELETE FROM targets WHERE value = 'allofmp3.com'")
    con.commit()
    con.close()
    with Controller(config, lambda core: [DnsDaemon(core)]) as c:
        [(_, port)] = c.bound["dns"]
        assert c.core is not None
        c.call(c.core.verified)  # proven in the background while it serves
        assert not c.core.healthy and c.core.follower.readable
        assert any("smuggled.example" in p for p in c.core.follower.unproven)
        assert str(ask(port, "www.allofmp3.com").answer[0][0]) == "127.0.0.80"  # journaled
        assert not any(str(rr) == "127.0.0.80"
                       for rrset in ask(port, "smuggled.example").answer for rr in rrset)
        con = sqlite3.connect(config.db)  # the operator repairs the tables...
        con.execute("DELETE FROM targets WHERE value = 'smuggled.example'")
        con.execute("INSERT INTO targets (order_id, kind, value, match, added_seq, forced) "
                    "VALUES (1, 'domain', 'allofmp3.com', 'subtree', 1, false)")
        con.commit()
        con.close()
        c.reload(config)  # ...and reloads (SIGHUP): proven again
        c.poll()
        assert c.core.healthy and c.core.follower.unproven == []
        assert str(ask(port, "www.allofmp3.com").answer[0][0]) == "127.0.0.80"


@pytest.mark.parametrize("resolve", [True, False])
def test_a_host_blocked_through_a_cname_gets_the_notice(config: Config, resolve: bool) -> None:
    """The resolver blocks alias.example (its CNAME leads to a blocked name); a browser
    that arrives with that Host is told which order, not "nothing is blocked here"."""
    c = dataclasses.replace(config, notice_resolve_cnames=resolve)
    with Controller(c, lambda core: [HttpDaemon(core)]) as ctl:
        [(_, port)] = ctl.bound["http"]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/", headers={"Host": "alias.example"})
        response = conn.getresponse()
        body = response.read().decode()
        conn.close()
        if resolve:
            assert response.status == 451 and "FI-15124/2006" in body
        else:
            assert response.status == 404
