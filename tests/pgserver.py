"""A real PostgreSQL server for the tests: an unprivileged throwaway cluster on 127.0.0.1.

PostgreSQL refuses to run as root, so under root the cluster is created and run as
``nobody`` (``runuser``); its files live in a temporary directory removed at the end.
fsync is off: the tests prove blockd's behaviour, not the disk's; the WAL is kept small
(a test reads every file of the store for client addresses). Each test gets a fresh
store in one shared database: every other connection to it is terminated and its schema
dropped and created again (~10 ms, where a CREATE DATABASE costs ~190 ms here), so nothing
a test left behind, connections included, reaches the next one.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

STORES = ["sqlite", "postgresql"]  # the params of the tests that run on both
USER = "blockd"  # the cluster's superuser (trust auth, loopback only)


def bindir() -> Path:
    """The newest installed server's binaries (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                   key=lambda p: int(p.parent.parent.name))
    if not found:
        raise RuntimeError("no PostgreSQL server installed (apt-get install postgresql; "
                           "scripts/test does that)")
    return found[-1].parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """``start()`` / ``stop()`` (idempotent); ``new_database()`` hands out fresh URLs."""

    def __init__(self) -> None:
        self.bin = bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="blockd-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self._names = itertools.count(1)
        self._as: list[str] = []
        if os.geteuid() == 0:  # postgres will not run as root
            shutil.chown(self.dir, "nobody")
            self._as = ["runuser", "-u", "nobody", "--"]
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8",
                  "--locale=C", "--no-sync", "--no-instructions")

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self._as, str(self.bin / tool), *args], capture_output=True,
                              text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()}"
                               + self.log_tail())

    def log_tail(self) -> str:
        log = self.dir / "log"
        return ("\n" + log.read_text()[-2000:]) if log.exists() else ""

    def start(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=300 -c max_wal_size=64MB -c min_wal_size=32MB")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w",
                  "-t", "30", "-o", options, "start")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def stop(self) -> None:
        """Fast shutdown (clients are disconnected); a no-op when it is not running."""
        if self.running():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, name: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{name}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(f"host=127.0.0.1 port={self.port} user={USER} "
                               "dbname=postgres", autocommit=True)

    def fresh(self, name: str = "blockd_test") -> str:
        """The URL of database ``name`` emptied for a new test (created when missing)."""
        with self.admin() as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (name,)).fetchone() is None:
                conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={USER} dbname={name}",
                             autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                         "datname = current_database() AND pid <> pg_backend_pid()")
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
            conn.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")  # as initdb leaves it
            conn.execute("DROP ROLE IF EXISTS reader_role")  # the one role a test creates
        return self.url(name)

    def new_database(self) -> str:
        name = f"t{next(self._names)}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0 STRATEGY FILE_COPY")
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
