"""Shared fixtures: a real SQLite file per test, a real PostgreSQL server (one per session,
a fresh database per test) and an in-process runner for the real CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dnsstub import StubUpstream
from pgserver import STORES, PgServer

from blockd.cli import main
from blockd.config import load_config
from blockd.daemon.controller import Controller
from blockd.daemon.http import HttpDaemon


@dataclass
class Result:
    code: int
    out: str
    err: str


Runner = Callable[..., Result]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "var" / "blockd.db"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL cluster for the session, always stopped and removed at the end. A
    server that cannot start fails the tests that need it (never skips them)."""
    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """An empty database on the session's server, for this test alone."""
    yield pg_server.fresh()
    if not pg_server.running():  # a test that stopped the server failed half-way
        pg_server.start()


@pytest.fixture(params=STORES)
def store_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store of a test that runs on both: a SQLite file path or a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "var" / "blockd.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def blockd(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Runner:
    """Run `blockd ARGS...` in-process against the test's store; returns code/out/err."""
    monkeypatch.setenv("BLOCKD_DB", str(db))
    monkeypatch.setenv("BLOCKD_ACTOR", "tester")
    monkeypatch.delenv("BLOCKD_CONFIG", raising=False)

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def db_digest(path: Path | str) -> str:
    """A digest of every row of every table: equal digests mean an unchanged store."""
    if str(path).startswith("postgresql://"):
        import psycopg

        with psycopg.connect(str(path)) as pg:
            return _digest(pg, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                               "ORDER BY 1")
    con = sqlite3.connect(path)
    try:
        return _digest(con, "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
    finally:
        con.close()


def _digest(con: Any, tables_sql: str) -> str:
    h = hashlib.sha256()
    for (t,) in con.execute(tables_sql).fetchall():
        h.update(t.encode())
        for row in con.execute(f'SELECT * FROM "{t}" ORDER BY 1'):
            h.update(repr(row).encode())
    return h.hexdigest()


def db_rows(db: Path | str, query: str) -> list[tuple[object, ...]]:
    """The rows of ``query``, read behind blockd's back, on SQLite or PostgreSQL."""
    if str(db).startswith("postgresql://"):
        import psycopg

        with psycopg.connect(str(db)) as con:
            return list(con.execute(query).fetchall())
    con = sqlite3.connect(db)
    try:
        return list(con.execute(query).fetchall())
    finally:
        con.close()


def stored_bytes(db: Path | str) -> bytes:
    """Every byte the database keeps on disk: the SQLite file with its -wal/-shm, or the
    PostgreSQL database's files (tables, indexes, TOAST) and the cluster's WAL."""
    if str(db).startswith("postgresql://"):
        (data,), (oid,) = (db_rows(db, "SHOW data_directory")[0],
                           db_rows(db, "SELECT oid FROM pg_database "
                                       "WHERE datname = current_database()")[0])
        root = Path(str(data))
        files = [*(root / "base" / str(oid)).iterdir(), *(root / "pg_wal").iterdir()]
        return b"".join(p.read_bytes() for p in sorted(files) if p.is_file())
    path = Path(db)
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*") if p.is_file())


def db_execute(db: Path | str, *statements: str) -> None:
    """Run SQL behind blockd's back (a tamperer's edit), on SQLite or PostgreSQL."""
    if str(db).startswith("postgresql://"):
        import psycopg

        with psycopg.connect(str(db)) as con:
            for statement in statements:
                con.execute(statement)
        return
    con = sqlite3.connect(db)
    try:
        for statement in statements:
            con.execute(statement)
        con.commit()
    finally:
        con.close()


# -- the notice server, shared by the HTTP and browser tests ----------------------

HOSTILE = 'High Court <script>alert("x")</script> {{ 7*7 }}'


@dataclass
class Http:
    """A notice server under test: in-process (the session's) or a `blockd serve http`."""

    port: int
    db: Path
    proc: subprocess.Popen[str] | None = None

    def get(self, host: str | None, path: str = "/", method: str = "GET",
            headers: dict[str, str] | None = None, body: bytes | None = None
            ) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            if host is not None:
                conn.putheader("Host", host)
            for k, v in (headers or {}).items():
                conn.putheader(k, v)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
        finally:
            conn.close()


def cli(db: Path, *args: str) -> None:
    assert main([*args, "--db", str(db)]) == 0


@pytest.fixture(scope="session")
def notice(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Http]:
    tmp = tmp_path_factory.mktemp("http")
    db = tmp / "blockd.db"
    config = tmp / "blockd.toml"
    config.write_text('[notice]\nurl = "https://isp.example/blocking"\n'
                      'resolve_cnames = false\n'
                      'isp_name = "Example ISP"\nisp_contact = "support@isp.example"\n'
                      '[hits]\nflush_interval = 0.2\n')
    os.environ["BLOCKD_CONFIG"] = str(config)
    try:
        cli(db, "init")
        cli(db, "order", "add", "FI-15124/2006", "--authority", "Copenhagen City Court",
            "--issued", "2006-10-25", "--policy", "dk", "--requested-by", "IFPI Danmark",
            "--legal-basis", "Danish Copyright Act", "allofmp3.com")
        cli(db, "order", "add", "UK-2014-1", "--authority", HOSTILE, "--issued", "2014-10-17",
            "--policy", "uk", "--appeal", "Apply <a href='x'>here</a>", "--requested-by",
            "Cartier", "counterfeit.example")
        cli(db, "order", "add", "DE-1", "--authority", "LG München I", "--issued",
            "2025-07-01", "--policy", "de", "gesperrt.example")
        cli(db, "order", "add", "IT-1", "--authority", "AGCOM", "--issued", "2024-02-01",
            "--policy", "it", "bloccato.example")
        cli(db, "order", "add", "TEMP-1", "--authority", "Court", "--issued", "2024-01-01",
            "soon-lifted.example")
    finally:
        del os.environ["BLOCKD_CONFIG"]
    # in-process on port 0, as `blockd serve http` builds it; the TLS listener, turning the
    # transparency list off and SIGTERM are tested against real processes
    base = load_config(config).with_db(str(db))
    with Controller(dataclasses.replace(base, notice_listen=(("127.0.0.1", 0),)),
                    lambda core: [HttpDaemon(core)]) as controller:
        [(_, port)] = controller.bound["http"]
        yield Http(port, db)
        assert controller.running


@pytest.fixture(scope="module")
def upstream() -> Iterator[StubUpstream]:
    """A stub upstream resolver on loopback that knows ok.example (modules that need
    other records define their own)."""
    with StubUpstream(["ok.example. 300 IN A 192.0.2.1"]) as up:
        yield up


def on_a_terminal(cmd: list[str], env: dict[str, str], timeout: float = 120) -> bytes:
    """Run ``cmd`` with its standard error on a pseudo-terminal (as an engineer's shell
    has it) and standard output discarded; what it wrote there. Fails on a non-zero exit."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    seen = read_to_end(master)
    code = proc.wait(timeout=timeout)
    os.close(master)
    assert code == 0, seen
    return seen


def read_to_end(master: int, seen: bytes = b"") -> bytes:
    """``seen`` and what a pseudo-terminal gives until its other end is closed."""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    return seen
