"""`blockd serve rpz`: the policy zone over UDP and TCP, AXFR and IXFR, NOTIFY, TSIG, the
journal anchor in the zone, `blockd rpz status`. The daemon runs in-process on port 0
(the handle `serve rpz` runs); dnspython is the client, never the code under test."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdata
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import dns.xfr
import dns.zone
import pytest
from conftest import Runner

from blockd.cli import main
from blockd.config import Config
from blockd.daemon.controller import Controller
from blockd.daemon.rpz import RpzDaemon
from blockd.rpz.primary import TsigKey, TsigKeyError

ZONE = "rpz.isp.example."
NOTICE = "127.0.0.80"
SECRET = base64.b64encode(bytes(range(32))).decode()


def cli(db: Path, *args: str) -> None:
    assert main([*args, "--db", str(db)]) == 0


def config_for(db: Path, **changes: Any) -> Config:
    base = Config(db=str(db), notice_ipv4=NOTICE, rpz_zone=ZONE,
                  rpz_listen=(("127.0.0.1", 0),))
    return dataclasses.replace(base, **changes)


@dataclasses.dataclass
class Served:
    """A running primary: its controller, handle and port."""

    controller: Controller
    daemon: RpzDaemon
    port: int
    db: Path

    @property
    def serial(self) -> int:
        assert self.daemon.zone is not None
        return self.daemon.zone.serial

    def wait_serial_after(self, serial: int, limit: float = 5.0) -> int:
        """Poll the store now and wait for the new version (installed off the loop)."""
        deadline = time.monotonic() + limit
        self.controller.poll()
        while self.serial == serial:
            assert time.monotonic() < deadline, "no new version of the zone"
            time.sleep(0.02)
        return self.serial

    def axfr(self, **tsig: Any) -> dns.zone.Zone:
        return dns.zone.from_xfr(dns.query.xfr("127.0.0.1", ZONE, port=self.port, **tsig))

    def ask(self, name: str, rdtype: str = "A", tcp: bool = False) -> dns.message.Message:
        q = dns.message.make_query(name, rdtype)
        if tcp:
            return dns.query.tcp(q, "127.0.0.1", port=self.port, timeout=3)
        return dns.query.udp(q, "127.0.0.1", port=self.port, timeout=3)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    db = tmp_path / "blockd.db"
    cli(db, "init")
    cli(db, "order", "add", "R-1", "--authority", "Court", "--issued", "2024-01-01",
        "allofmp3.com", "=exact.example", "*.wild.example", "45.33.32.0/24",
        "2a01:4f8::/48")
    cli(db, "order", "add", "IT-1", "--authority", "AGCOM", "--issued", "2024-01-01",
        "--policy", "it", "bloccato.example")
    return db


@pytest.fixture
def serve(store: Path) -> Iterator[Callable[..., Served]]:
    """Start primaries on ``store`` (config changes as keywords); all stopped after."""
    running: list[Controller] = []

    def start(clock: Callable[[], datetime] | None = None, **changes: Any) -> Served:
        extra = {"clock": clock} if clock is not None else {}
        c = Controller(config_for(store, **changes), lambda core: [RpzDaemon(core)],
                       instance="rpz", **extra)
        c.start()
        running.append(c)
        [(_, port)] = c.bound["rpz"]
        daemon = c.daemons[0]
        assert isinstance(daemon, RpzDaemon)
        return Served(c, daemon, port, store)

    yield start
    for c in running:
        c.stop()


def rrs(zone: dns.zone.Zone, skip_soa: bool = True) -> set[tuple[str, str, str]]:
    """(owner, type, rdata) of every record; the SOA (serials differ) left out."""
    return {(str(name), dns.rdatatype.to_text(rds.rdtype), rr.to_text())
            for name, rds in zone.iterate_rdatasets() for rr in rds
            if not (skip_soa and rds.rdtype == dns.rdatatype.SOA)}


# -- the zone ------------------------------------------------------------------------


def test_axfr_serves_the_records_export_writes(serve: Callable[..., Served],
                                               blockd: Runner, store: Path) -> None:
    s = serve()
    served = s.axfr()
    exported = blockd("export", "--format", "rpz", "--zone", ZONE, "--db", str(store))
    assert exported.code == 0
    # the export's notice address comes from the configuration, the test's is the default
    text = exported.out.replace("127.0.0.1", NOTICE)
    written = dns.zone.from_text(text, origin=ZONE, relativize=True)
    assert rrs(served) == rrs(written)
    got = rrs(served)
    assert ("allofmp3.com", "A", NOTICE) in got and ("*.allofmp3.com", "A", NOTICE) in got
    assert ("exact.example", "A", NOTICE) in got
    assert not any(o == "*.exact.example" for o, _, _ in got)
    assert ("*.wild.example", "A", NOTICE) in got and ("wild.example", "A", NOTICE) not in got
    assert ("24.0.32.33.45.rpz-ip", "A", NOTICE) in got
    assert ("48.zz.4f8.2a01.rpz-ip", "CNAME", ".") in got  # no AAAA notice address
    assert ("bloccato.example", "CNAME", ".") in got  # the it policy: NXDOMAIN
    soa = served.find_rdataset("@", "SOA")[0]
    assert soa.serial == s.serial


def test_queries_for_the_zone(serve: Callable[..., Served], store: Path) -> None:
    s = serve()
    r = s.ask(ZONE, "SOA")
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
    assert r.answer[0][0].serial == s.serial
    r = s.ask("www.allofmp3.com." + ZONE, "A", tcp=True)
    assert r.rcode() == dns.rcode.NXDOMAIN  # the owner is *.allofmp3.com, not www.
    r = s.ask("*.allofmp3.com." + ZONE, "A")
    assert [str(rr) for rr in r.answer[0]] == [NOTICE]
    r = s.ask("bloccato.example." + ZONE, "AAAA")
    assert r.answer[0].rdtype == dns.rdatatype.CNAME  # a CNAME answers every type
    r = s.ask("nothing.example." + ZONE, "A")
    assert r.rcode() == dns.rcode.NXDOMAIN and r.authority[0].rdtype == dns.rdatatype.SOA
    assert s.ask("allofmp3.com.", "A").rcode() == dns.rcode.REFUSED  # not our zone


def test_ixfr_sends_the_difference(serve: Callable[..., Served], store: Path) -> None:
    s = serve()
    old_serial = s.serial
    secondary = s.axfr()
    cli(store, "order", "target", "add", "R-1", "new.example")
    new_serial = s.wait_serial_after(old_serial)
    q = dns.message.make_query(ZONE, "IXFR")
    q.authority = [dns.rrset.from_text(ZONE, 0, "IN", "SOA",
                                       f"localhost. h. {old_serial} 1 1 1 1")]
    messages = list(_raw_transfer(s.port, q))
    answers = [rr for m in messages for rr in _records(m)]
    # RFC 1995: new SOA, old SOA, deletions (the old TXT), new SOA, additions, new SOA
    assert [a[1] for a in answers] == ["SOA", "SOA", "TXT", "SOA", "TXT", "A", "A", "SOA"]
    assert {a[0] for a in answers if a[1] == "A"} == {"new.example", "*.new.example"}
    # and dnspython's IXFR client applies it to the old copy: the zone as AXFR sends it
    dns.query.inbound_xfr("127.0.0.1", secondary, port=s.port,
                          query=dns.xfr.make_query(secondary)[0])
    assert rrs(secondary, skip_soa=False) == rrs(s.axfr(), skip_soa=False)
    assert secondary.find_rdataset("@", "SOA")[0].serial == new_serial


def test_ixfr_up_to_date_or_unknown_serial(serve: Callable[..., Served]) -> None:
    s = serve()
    full = len(rrs(s.axfr(), skip_soa=False))

    def ixfr(serial: int, tcp: bool = True) -> list[tuple[str, str, str]]:
        q = dns.message.make_query(ZONE, "IXFR")
        q.authority = [dns.rrset.from_text(ZONE, 0, "IN", "SOA",
                                           f"localhost. h. {serial} 1 1 1 1")]
        if not tcp:
            r = dns.query.udp(q, "127.0.0.1", port=s.port, timeout=3)
            return [(str(rrset.name), "SOA", str(rr)) for rrset in r.answer for rr in rrset]
        return [rr for m in _raw_transfer(s.port, q) for rr in _records(m)]

    assert [r[1] for r in ixfr(s.serial)] == ["SOA"]  # up to date: the SOA alone
    too_old = ixfr(s.serial - 1000)  # not in the history: the whole zone (AXFR-style)
    assert too_old[0][1] == too_old[-1][1] == "SOA" and len(too_old) == full + 1
    assert len(ixfr(s.serial - 1000, tcp=False)) == 1  # over UDP: "use TCP" (the SOA)


def test_serial_grows_when_an_order_ends_by_the_clock(store: Path,
                                                      serve: Callable[..., Served]) -> None:
    until = datetime.now(UTC) + timedelta(hours=1)
    cli(store, "order", "add", "T-1", "--authority", "Court", "--issued", "2024-01-01",
        "--until", until.strftime("%Y-%m-%dT%H:%M:%SZ"), "temporary.example")
    now = [datetime.now(UTC)]
    s = serve(clock=lambda: now[0])
    before, txt = s.serial, s.ask(ZONE, "TXT").answer[0][0].strings
    assert ("temporary.example", "A", NOTICE) in rrs(s.axfr())
    old = s.axfr()
    now[0] = until + timedelta(seconds=1)  # no journal entry: the clock alone
    after = s.wait_serial_after(before)
    assert after != before and (after - before) % 2**32 < 2**31  # an increase (RFC 1982)
    assert ("temporary.example", "A", NOTICE) not in rrs(s.axfr())
    assert s.ask(ZONE, "TXT").answer[0][0].strings == txt  # the journal did not move
    dns.query.inbound_xfr("127.0.0.1", old, port=s.port, query=dns.xfr.make_query(old)[0])
    assert rrs(old) == rrs(s.axfr())


def test_large_zone_streams_in_messages_under_64k(store: Path,
                                                  serve: Callable[..., Served]) -> None:
    names = [f"n{i}.clone.example" for i in range(6000)]
    (store.parent / "names.txt").write_text("\n".join(names) + "\n")
    cli(store, "import", "--format", "list", "--order", "R-1", str(store.parent / "names.txt"))
    s = serve()
    q = dns.message.make_query(ZONE, "AXFR")
    sizes: list[int] = []
    messages = list(_raw_transfer(s.port, q, sizes))
    assert len(messages) > 5 and max(sizes) < 65_535
    records = [rr for m in messages for rr in _records(m)]
    assert records[0][1] == records[-1][1] == "SOA"
    owners = {r[0] for r in records}
    assert {"n5999.clone.example", "*.n0.clone.example"} <= owners
    assert len(records) == 2 * 6000 + 6 + 2 + 3 + 1  # clones, R-1, IT-1, apex, SOA


def test_a_restarted_primary_keeps_the_serial_growing(serve: Callable[..., Served]) -> None:
    first = serve()
    serial = first.serial
    first.controller.stop()
    second = serve()
    assert (second.serial - serial) % 2**32 < 2**31 and second.serial != serial


# -- who may transfer ------------------------------------------------------------------


def test_transfer_refused_outside_allow_transfer(serve: Callable[..., Served]) -> None:
    s = serve(rpz_allow_transfer=("10.0.0.0/8",))
    with pytest.raises(dns.xfr.TransferError) as exc:
        s.axfr()
    assert exc.value.rcode == dns.rcode.REFUSED
    assert s.ask(ZONE, "SOA").rcode() == dns.rcode.REFUSED


def test_protocol_errors(serve: Callable[..., Served]) -> None:
    s = serve()
    q = dns.message.make_query(ZONE, "AXFR")
    r = dns.query.udp(q, "127.0.0.1", port=s.port, timeout=3)
    assert r.rcode() == dns.rcode.FORMERR  # AXFR is TCP only (RFC 5936 4.2)
    update = dns.message.make_query(ZONE, "SOA")
    update.set_opcode(dns.opcode.UPDATE)
    assert dns.query.udp(update, "127.0.0.1", port=s.port,
                         timeout=3).rcode() == dns.rcode.NOTIMP
    ixfr = dns.message.make_query(ZONE, "IXFR")  # no SOA of the client's version
    assert dns.query.tcp(ixfr, "127.0.0.1", port=s.port,
                         timeout=3).rcode() == dns.rcode.FORMERR
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x50" + b"a" * 80,
                    ("127.0.0.1", s.port))
        reply = sock.recv(512)
        assert reply[:2] == b"\x12\x34" and reply[3] & 0x0F == dns.rcode.FORMERR
    assert s.ask(ZONE, "SOA").rcode() == dns.rcode.NOERROR  # still serving


def test_hostile_tcp_clients(store: Path, serve: Callable[..., Served]) -> None:
    """Empty and garbage messages get no answer but keep the connection; a client that
    hangs up in the middle of a large transfer costs nothing else."""
    names = [f"n{i}.clone.example" for i in range(3000)]
    (store.parent / "names.txt").write_text("\n".join(names) + "\n")
    cli(store, "import", "--format", "list", "--order", "R-1", str(store.parent / "names.txt"))
    s = serve()
    soa = dns.message.make_query(ZONE, "SOA").to_wire()
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
        sock.sendall(b"\x00\x00" + b"\x00\x05hello" + struct.pack("!H", len(soa)) + soa)
        (length,) = struct.unpack("!H", _read(sock, 2))
        reply = dns.message.from_wire(_read(sock, length))
        assert reply.rcode() == dns.rcode.NOERROR and reply.answer[0].rdtype == 6
    for _ in range(3):  # ask for the zone, read one message, hang up
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
            axfr = dns.message.make_query(ZONE, "AXFR").to_wire()
            sock.sendall(struct.pack("!H", len(axfr)) + axfr)
            _read(sock, 2)
    assert ("n2999.clone.example", "A", NOTICE) in rrs(s.axfr())


# -- TSIG ------------------------------------------------------------------------------


def _key_file(tmp: Path, name: str = "blockd-xfr", secret: str = SECRET) -> Path:
    path = tmp / f"{name}.key"
    path.write_text(f'key "{name}" {{\n\talgorithm hmac-sha256;\n\tsecret "{secret}";\n}};\n')
    return path


def test_tsig_on_transfers(serve: Callable[..., Served], store: Path, tmp_path: Path) -> None:
    names = [f"n{i}.clone.example" for i in range(3000)]  # several signed messages
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    cli(store, "import", "--format", "list", "--order", "R-1", str(tmp_path / "names.txt"))
    s = serve(rpz_tsig_key=_key_file(tmp_path))
    ring = dns.tsigkeyring.from_text({"blockd-xfr.": ("hmac-sha256", SECRET)})
    zone = s.axfr(keyring=ring, keyname="blockd-xfr.", keyalgorithm=dns.tsig.HMAC_SHA256)
    assert ("n2999.clone.example", "A", NOTICE) in rrs(zone)
    with pytest.raises(dns.xfr.TransferError) as exc:
        s.axfr()  # unsigned
    assert exc.value.rcode == dns.rcode.REFUSED
    wrong = dns.tsigkeyring.from_text({"blockd-xfr.": ("hmac-sha256", base64.b64encode(
        b"x" * 32).decode())})
    with pytest.raises(dns.xfr.TransferError) as exc:
        s.axfr(keyring=wrong, keyname="blockd-xfr.", keyalgorithm=dns.tsig.HMAC_SHA256)
    assert exc.value.rcode == dns.rcode.NOTAUTH  # RFC 8945 5.2
    assert s.ask(ZONE, "SOA").rcode() == dns.rcode.NOERROR  # plain queries need no key
    # a signed IXFR in one message keeps its four SOAs (signing must not merge them)
    old = s.serial
    cli(store, "order", "target", "add", "R-1", "signed.example")
    new = s.wait_serial_after(old)
    q, _ = dns.xfr.make_query(zone, keyring=ring, keyname="blockd-xfr.",
                              keyalgorithm=dns.tsig.HMAC_SHA256)
    dns.query.inbound_xfr("127.0.0.1", zone, query=q, port=s.port)
    assert zone.find_rdataset("@", "SOA")[0].serial == new
    assert ("signed.example", "A", NOTICE) in rrs(zone)


@pytest.mark.parametrize(("text", "problem"), [
    ('key "k" { algorithm hmac-md5; secret "YWJj"; };', "only hmac-sha256"),
    ("secret", 'no key "NAME"'),
    (None, "cannot read"),
])
def test_tsig_key_file_errors(tmp_path: Path, text: str | None, problem: str) -> None:
    path = tmp_path / "k.key"
    if text is not None:
        path.write_text(text)
    with pytest.raises(TsigKeyError, match=problem) as exc:
        TsigKey.load(path)
    assert str(exc.value).startswith(f"--tsig-key: {path}: ")


# -- NOTIFY ------------------------------------------------------------------------------


class Secondary:
    """A UDP socket standing in for a secondary: records NOTIFYs, answers from the
    ``answer_from``-th on (the earlier ones are lost, as on a bad network)."""

    def __init__(self, answer_from: int = 1,
                 keyring: dict[dns.name.Name, dns.tsig.Key] | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.answer_from = answer_from
        self.keyring = keyring
        self.got: list[dns.message.Message] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                data, addr = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            m = dns.message.from_wire(data, keyring=self.keyring)  # verifies the TSIG
            self.got.append(m)
            if len(self.got) >= self.answer_from:
                self.sock.sendto(dns.message.make_response(m).to_wire(), addr)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


def _wait(condition: Callable[[], bool], limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.05)


def test_notify_after_every_change_with_retries(serve: Callable[..., Served],
                                                store: Path, blockd: Runner) -> None:
    sec = Secondary(answer_from=2)  # the first NOTIFY is lost
    try:
        s = serve(rpz_notify=(("127.0.0.1", sec.port),))
        _wait(lambda: s.daemon.notified.get(f"127.0.0.1:{sec.port}", {}).get("acked", False))
        first = sec.got[0]
        assert first.opcode() == dns.opcode.NOTIFY and first.flags & dns.flags.AA
        assert first.question[0].name == dns.name.from_text(ZONE)
        assert s.daemon.notified[f"127.0.0.1:{sec.port}"]["attempts"] == 2
        old = s.serial
        cli(store, "order", "lift", "IT-1", "--reason", "set aside")
        new = s.wait_serial_after(old)
        _wait(lambda: any(m.answer and m.answer[0][0].serial == new for m in sec.got))
        _wait(lambda: f"notify 127.0.0.1:{sec.port}: serial {new} acknowledged" in blockd(
            "rpz", "status", "--db", str(store)).out)
    finally:
        sec.close()


def test_notify_is_signed_with_the_key(serve: Callable[..., Served], tmp_path: Path) -> None:
    ring = dns.tsigkeyring.from_text({"blockd-xfr.": ("hmac-sha256", SECRET)})
    sec = Secondary(keyring=ring)
    try:
        s = serve(rpz_notify=(("127.0.0.1", sec.port),), rpz_tsig_key=_key_file(tmp_path))
        _wait(lambda: s.daemon.notified.get(f"127.0.0.1:{sec.port}", {}).get("acked", False))
        assert sec.got[0].had_tsig
    finally:
        sec.close()


# -- the anchor, the status ------------------------------------------------------------


def test_journal_head_in_the_zone_anchors_the_journal(serve: Callable[..., Served],
                                                      blockd: Runner, store: Path) -> None:
    s = serve()
    cli(store, "order", "target", "add", "R-1", "later.example")
    s.wait_serial_after(s.serial)
    anchor = s.ask(ZONE, "TXT").answer[0][0].strings[0].decode()
    assert anchor == blockd("audit", "anchor", "--db", str(store)).out.strip()
    assert blockd("audit", "verify", "--anchor", anchor, "--db", str(store)).code == 0
    s.controller.stop()
    with sqlite3.connect(store) as con:  # the newest entry deleted, tables put back
        con.execute("DELETE FROM journal WHERE seq = (SELECT max(seq) FROM journal)")
        con.execute("DELETE FROM targets WHERE value = 'later.example'")
    con.close()
    result = blockd("audit", "verify", "--anchor", anchor, "--db", str(store))
    assert result.code == 1 and "entries deleted from its end" in result.out


def test_rpz_status(serve: Callable[..., Served], blockd: Runner, store: Path) -> None:
    s = serve()
    s.axfr()
    s.ask(ZONE, "SOA")
    _wait(lambda: "127.0.0.1" in json.loads(
        (store.parent / "blockd.db-state" / "rpz.json").read_text()).get("secondaries", {}))
    _wait(lambda: "soa" in json.loads(blockd(
        "rpz", "status", "--json", "--db", str(store)).out)["secondaries"]["127.0.0.1"])
    data = json.loads(blockd("rpz", "status", "--json", "--db", str(store)).out)
    assert data["serial"] == s.serial and data["zone"] == ZONE
    seen = data["secondaries"]["127.0.0.1"]
    assert seen["transfer"]["kind"] == "axfr" and seen["transfer"]["serial"] == s.serial
    assert seen["soa"]["serial"] == s.serial
    text = blockd("rpz", "status", "--db", str(store))
    assert text.code == 0 and f"127.0.0.1: fetched {s.serial} at " in text.out


def test_rpz_status_without_a_primary(blockd: Runner, store: Path) -> None:
    r = blockd("rpz", "status", "--db", str(store))
    assert r.code != 0 and "no RPZ status in" in r.err and len(r.err.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "field"), [
    (["--listen", "primary:53"], "--listen"),
    (["--notify", "127.0.0.1:99999"], "--notify"),
    (["--allow-transfer", "10.0.0.0/33"], "--allow-transfer"),
    (["--zone", "a..b"], "--zone"),
    (["--tsig-key", "/nonexistent/k.key"], "--tsig-key"),
])
def test_serve_rpz_bad_input(blockd: Runner, store: Path, args: list[str],
                             field: str) -> None:
    r = blockd("serve", "rpz", "--db", str(store), *args)
    assert r.code != 0 and field in r.err and len(r.err.strip().splitlines()) == 1


# -- wire helpers (a raw client: sizes and record order as sent) ------------------------


def _raw_transfer(port: int, query: dns.message.Message,
                  sizes: list[int] | None = None) -> Iterator[dns.message.Message]:
    """The messages of a transfer over TCP, read until the closing SOA: the current
    serial twice (AXFR-style), three times (incremental: old SOA second), or once alone
    (IXFR up to date)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        wire = query.to_wire()
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        seen: list[tuple[str, int | None]] = []  # (type, SOA serial)
        while True:
            (length,) = struct.unpack("!H", _read(sock, 2))
            data = _read(sock, length)
            if sizes is not None:
                sizes.append(length)
            m = dns.message.from_wire(data, xfr=True, origin=dns.name.from_text(ZONE),
                                      one_rr_per_rrset=True)
            yield m
            seen.extend((dns.rdatatype.to_text(r.rdtype),
                         r[0].serial if r.rdtype == dns.rdatatype.SOA else None)
                        for r in m.answer)
            current = seen[0][1]
            times = sum(1 for t, serial in seen if t == "SOA" and serial == current)
            incremental = len(seen) > 1 and seen[1][0] == "SOA" and seen[1][1] != current
            if len(seen) == 1 or times == (3 if incremental else 2):
                return


def _read(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, "connection closed mid-message"
        out += chunk
    return out


def _records(m: dns.message.Message) -> list[tuple[str, str, str]]:
    return [(rrset.name.relativize(dns.name.from_text(ZONE)).to_text(),
             dns.rdatatype.to_text(rrset.rdtype), rr.to_text())
            for rrset in m.answer for rr in rrset]


def test_the_wire_fast_path_writes_the_shared_records() -> None:
    """SlotWire's templates give exactly what slot_records gives, also where it falls
    back: several orders on one name, rpz- labels, names too long, addresses."""
    from blockd.core.index import compile_index
    from blockd.core.model import Action, OrderRecord
    from blockd.core.names import parse_target
    from blockd.rpz.primary import Zone, _pack
    from blockd.rpz.zone import SlotWire, ZoneSettings

    now = datetime(2026, 1, 1, tzinfo=UTC)
    long = ".".join(["a" * 60] * 4)[:230] + ".example"

    def order(ref: str, policy: str, *specs: str) -> OrderRecord:
        return OrderRecord(ref, "Court", datetime(2024, 1, 1).date(), now, policy=policy,
                           targets=frozenset(parse_target(s) for s in specs))

    orders = [order("A", "default", "a.example", "=b.example", "*.c.example", "both.example",
                    "x.rpz-ip.example", long, "45.33.32.0/24", "2a01:4f8::/48"),
              order("B", "it", "=both.example", "d.example", "45.33.32.0/24"),
              order("C", "nodata", "e.example")]
    actions = {"default": Action.NOTICE, "it": Action.NXDOMAIN, "nodata": Action.NODATA}
    index = compile_index(orders, now, actions)
    settings = ZoneSettings(apex="rpz.isp.example", notice_ipv4=NOTICE,
                            notice_ipv6="2001:db8::80")
    shared = {r for r in Zone(settings, index, None, 1).records()
              if r[0] != "" and r[1] != "SOA"}
    question = dns.name.from_text(ZONE).to_wire() + b"\x00\xfc\x00\x01"
    got = set()
    for wire in _pack(1, 0x8400, question, SlotWire(index, settings).records()):
        got.update(_records(dns.message.from_wire(wire, one_rr_per_rrset=True)))
    want = {(o, t, d if t != "AAAA" else str(dns.rdata.from_text("IN", "AAAA", d)))
            for o, t, d in shared}
    assert got == want
    assert ("both.example", "A", NOTICE) in got or ("both.example", "CNAME", ".") in got
    assert ("e.example", "CNAME", "*.") in got
    assert ("x.rpz-ip.example", "A", NOTICE) in got  # only a last rpz- label is reserved
    assert not any(o.endswith(long) for o, _, _ in got)  # too long under the apex


def test_reload_applies_allow_transfer(serve: Callable[..., Served], store: Path) -> None:
    s = serve()
    assert s.ask(ZONE, "SOA").rcode() == dns.rcode.NOERROR
    s.controller.reload(config_for(store, rpz_allow_transfer=("10.0.0.0/8",)))
    assert s.ask(ZONE, "SOA").rcode() == dns.rcode.REFUSED


def test_serves_on_ipv6_loopback(serve: Callable[..., Served]) -> None:
    s = serve(rpz_listen=(("::1", 0),))
    assert s.daemon.bound[0][0] == "::1"
    q = dns.message.make_query(ZONE, "SOA")
    assert dns.query.udp(q, "::1", port=s.port, timeout=3).answer[0][0].serial == s.serial
    zone = dns.zone.from_xfr(dns.query.xfr("::1", ZONE, port=s.port))
    assert ("allofmp3.com", "A", NOTICE) in rrs(zone)


# -- metrics -----------------------------------------------------------------------------


class NotifyAcker:
    """A secondary's NOTIFY port: answers every NOTIFY it reads (in a thread)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.acked = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            if query.opcode() == dns.opcode.NOTIFY:
                self.sock.sendto(dns.message.make_response(query).to_wire(), peer)
                self.acked += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def _until(what: Callable[[], bool], limit: float = 30.0) -> None:
    """Wait for a condition (a deadline against hanging, not a figure)."""
    deadline = time.monotonic() + limit
    while not what():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_serve_rpz_metrics_and_healthz(store: Path, tmp_path: Path) -> None:
    """`blockd serve rpz --metrics` as a real process, scraped and read with
    prometheus_client's parser: the zone's serial and records (what an AXFR sends),
    transfers by kind and result, NOTIFY sent and failed, how long a secondary's serial
    has been behind, the core's families, and /healthz."""
    from daemons import metric_of, scrape
    from prometheus_client.parser import text_string_to_metric_families

    acker = NotifyAcker()
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a secondary that is down
    silent.bind(("127.0.0.1", 0))
    config = tmp_path / "blockd.toml"
    config.write_text(f'[notice]\nipv4 = "{NOTICE}"\n[rpz]\nzone = "{ZONE}"\n')
    env = {**os.environ, "BLOCKD_CONFIG": str(config), "BLOCKD_ACTOR": "tester"}
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "blockd", "serve", "rpz", "--db", str(store), "--listen",
         "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--notify", f"127.0.0.1:{acker.port}",
         "--notify", f"127.0.0.1:{silent.getsockname()[1]}"],
        stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on" in line and "; metrics http://127.0.0.1:" in line, line
        port = int(line.split("listening on ", 1)[1].split(" ", 1)[0].rsplit(":", 1)[1])
        url = line.split("; metrics ", 1)[1].strip()

        def metric(name: str, **labels: str) -> float:
            return metric_of(scrape(url), name, **labels)

        def soa() -> int:
            r = dns.query.udp(dns.message.make_query(ZONE, "SOA"), "127.0.0.1", port=port,
                              timeout=3)
            return int(r.answer[0][0].serial)

        def ixfr(serial: int, tcp: bool = True) -> list[tuple[str, str, str]]:
            q = dns.message.make_query(ZONE, "IXFR")
            q.authority = [dns.rrset.from_text(ZONE, 0, "IN", "SOA",
                                               f"localhost. h. {serial} 1 1 1 1")]
            if not tcp:
                dns.query.udp(q, "127.0.0.1", port=port, timeout=3)
                return []
            return [rr for m in _raw_transfer(port, q) for rr in _records(m)]

        old = soa()
        assert metric("blockd_rpz_zone_serial") == old
        axfr = [rr for m in _raw_transfer(port, dns.message.make_query(ZONE, "AXFR"))
                for rr in _records(m)]
        _until(lambda: "blockd_rpz_zone_records " in scrape(url))  # after the proof
        assert metric("blockd_rpz_zone_records") == len(axfr) - 1  # the SOA once
        assert metric("blockd_rpz_transfers_total", kind="axfr", result="ok") == 1
        assert metric("blockd_rpz_secondary_serial", secondary="127.0.0.1") == old
        assert metric("blockd_rpz_secondary_serial_age_seconds", secondary="127.0.0.1") == 0
        r = dns.query.udp(dns.message.make_query(ZONE, "AXFR"), "127.0.0.1", port=port,
                          timeout=3)
        assert r.rcode() == dns.rcode.FORMERR
        assert metric("blockd_rpz_transfers_total", kind="axfr", result="refused") == 1

        cli(store, "order", "target", "add", "R-1", "new.example")
        _until(lambda: soa() != old)
        new = soa()
        text = scrape(url)
        assert metric_of(text, "blockd_rpz_zone_serial") == new
        assert metric_of(text, "blockd_rpz_zone_records") == len(axfr) - 1 + 2  # name, *.
        assert metric_of(text, "blockd_rpz_secondary_serial", secondary="127.0.0.1") == old
        time.sleep(0.05)  # the clock moves on: its serial is now behind by that at least
        assert metric("blockd_rpz_secondary_serial_age_seconds", secondary="127.0.0.1") > 0
        assert [a[1] for a in ixfr(old)].count("SOA") == 4  # incremental
        assert metric("blockd_rpz_transfers_total", kind="ixfr", result="ok") == 1
        assert metric("blockd_rpz_secondary_serial", secondary="127.0.0.1") == new
        assert metric("blockd_rpz_secondary_serial_age_seconds", secondary="127.0.0.1") == 0
        ixfr(new)
        assert metric("blockd_rpz_transfers_total", kind="ixfr", result="up_to_date") == 1
        ixfr(old, tcp=False)
        assert metric("blockd_rpz_transfers_total", kind="ixfr", result="use_tcp") == 1
        ixfr(new - 1000)
        assert metric("blockd_rpz_transfers_total", kind="ixfr_fallback", result="ok") == 1

        # NOTIFY: at start and after the change to both; the silent one never answers
        _until(lambda: metric("blockd_rpz_notify_failed_total") >= 1)
        assert acker.acked >= 2
        assert metric("blockd_rpz_notify_sent_total") >= acker.acked + 1

        text = scrape(url)
        assert metric_of(text, "blockd_policy_journal_seq") == 3
        assert metric_of(text, "blockd_store_healthy") == 1
        assert metric_of(text, "process_resident_memory_bytes") > 0
        assert "blockd_dns_queries" not in text  # only what this daemon runs
        for family in text_string_to_metric_families(text):
            if family.type == "counter":
                assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        with urllib.request.urlopen(url.replace("/metrics", "/healthz"), timeout=3) as resp:
            assert resp.status == 200 and resp.read() == b"ok\n"
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        log.seek(0)
        err = log.read()
        log.close()
        acker.close()
        silent.close()
    assert "Traceback" not in err, err
