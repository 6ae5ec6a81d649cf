"""Opening a store: the database URL, the SQLite pragmas, the file probe, typed errors.

Errors carry their cause as a type (``StoreLocked``, ``StoreDamaged``...), decided from the
driver's error code (SQLite's result code, PostgreSQL's SQLSTATE), never from its message
text; each still prints as one line naming the database (never its password).
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blockd.core.model import BlockdError

if TYPE_CHECKING:  # SQLAlchemy loads with the first engine: the quick commands never need it
    from sqlalchemy import Engine
    from sqlalchemy.exc import DBAPIError

BUSY_TIMEOUT_MS = 5000
SQLITE_MAGIC = b"SQLite format 3\x00"
SCHEMA_VERSION = 3  # the tables' version: v2 targets.forced; v3 hits per channel with
# sketches, timeline, verify runs (store/tables.py, store/migrations.py)


class StoreError(BlockdError):
    """The store cannot be used (the subclasses say why)."""


class StoreMissing(StoreError):
    """No database file, or it cannot be opened or created."""


class StoreLocked(StoreError):
    """Another process held the write lock for longer than the busy timeout."""


class StoreDamaged(StoreError):
    """Not an SQLite database, or a damaged one."""


class StoreReadOnly(StoreError):
    """The file or its directory is not writable for this user."""


class StoreFull(StoreError):
    """The disk (or quota) is full."""


class StoreSchemaError(StoreError):
    """Not initialised, or at a schema version this blockd does not use."""


class StoreReplaced(StoreError):
    """The file under an open handle was replaced (restore, rm + init)."""


class StoreDiverged(StoreError):
    """The store's journal does not continue the one a daemon enforces (shorter, or a
    different chain): a replaced or restored store that no operator adopted."""


class StoreConflict(StoreError):
    """A write broke a uniqueness or foreign-key rule (a concurrent change)."""


PG_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")


def is_postgres(db: str) -> bool:
    return db.startswith(PG_SCHEMES)


def check_version(where: str, version: int) -> None:
    """StoreSchemaError unless the store is initialised at this blockd's schema."""
    if version == 0:
        raise StoreSchemaError(f"{where} is not initialised; run `blockd init`")
    if version != SCHEMA_VERSION:
        raise StoreSchemaError(
            f"{where} has schema v{version}, this blockd uses v{SCHEMA_VERSION}; "
            "run `blockd init` to upgrade"
            if version < SCHEMA_VERSION
            else f"{where} has schema v{version}, newer than this blockd "
            f"(v{SCHEMA_VERSION}); upgrade blockd")


def database_url(db: str) -> tuple[str, Path | None]:
    """A URL stays a URL; anything else is a SQLite file path. The path is the SQLite file
    behind the URL when there is one (``sqlite:///file:PATH?mode=ro&uri=true`` included).
    ``postgresql://`` means psycopg 3 (SQLAlchemy's default for it is psycopg2)."""
    if "://" in db:
        if is_postgres(db):
            return "postgresql+psycopg://" + db.split("://", 1)[1], None
        if not db.startswith("sqlite:///"):
            return db, None
        name, _, query = db.removeprefix("sqlite:///").partition("?")
        if "uri=true" in query.split("&"):
            if not name.startswith("file:") or "mode=memory" in query.split("&"):
                return db, None
            name = name.removeprefix("file:")
        return db, (Path(name) if name and name != ":memory:" else None)
    path = Path(db).expanduser().absolute()
    return f"sqlite:///{path}", path


# SQLite primary result codes (the low byte of an extended code)
_BY_SQLITE_CODE: dict[int, type[StoreError]] = {
    sqlite3.SQLITE_BUSY: StoreLocked,
    sqlite3.SQLITE_LOCKED: StoreLocked,
    sqlite3.SQLITE_NOTADB: StoreDamaged,
    sqlite3.SQLITE_CORRUPT: StoreDamaged,
    sqlite3.SQLITE_READONLY: StoreReadOnly,
    sqlite3.SQLITE_FULL: StoreFull,
    sqlite3.SQLITE_CANTOPEN: StoreMissing,
}


# PostgreSQL SQLSTATEs: the exact code first, then its two-character class
_BY_SQLSTATE: dict[str, type[StoreError]] = {
    "3D000": StoreMissing,  # invalid_catalog_name: no such database
    "42P01": StoreSchemaError,  # undefined_table: not initialised (or another schema)
    "42703": StoreSchemaError,  # undefined_column
    "40001": StoreLocked,  # serialization_failure
    "40P01": StoreLocked,  # deadlock_detected
    "55P03": StoreLocked,  # lock_not_available (lock_timeout)
    "57014": StoreLocked,  # query_canceled (statement_timeout)
    "53100": StoreFull,  # disk_full
    "25006": StoreReadOnly,  # read_only_sql_transaction (a hot standby)
    "42501": StoreReadOnly,  # insufficient_privilege
    "XX001": StoreDamaged,  # data_corrupted
    "XX002": StoreDamaged,  # index_corrupted
    "08": StoreMissing,  # connection exception
    "28": StoreMissing,  # invalid authorization: this user cannot open it
    "57": StoreMissing,  # operator intervention: shut down, starting up, terminated
    "23": StoreConflict,  # integrity constraint violation
}


def _pg_kind(orig: BaseException | None) -> type[StoreError] | None:
    """The StoreError type for a psycopg error, None if ``orig`` is not one. A connection
    that never reached a server (refused, unreachable) carries no SQLSTATE."""
    if orig is None or not type(orig).__module__.startswith("psycopg"):
        return None
    state = getattr(orig, "sqlstate", None)
    if not state:
        import psycopg

        return StoreMissing if isinstance(orig, psycopg.OperationalError) else StoreError
    return _BY_SQLSTATE.get(state) or _BY_SQLSTATE.get(state[:2]) or StoreError


def explain(exc: DBAPIError, where: str) -> StoreError:
    """The typed, one-line error for a driver error raised through SQLAlchemy."""
    return explain_driver(exc.orig if exc.orig is not None else exc, where)


def explain_driver(orig: BaseException, where: str) -> StoreError:
    """The typed, one-line error for the driver's own error (``sqlite3.Error``, a
    psycopg error)."""
    message = " ".join(str(orig).split())
    code = getattr(orig, "sqlite_errorcode", None)
    kind = _BY_SQLITE_CODE.get(code & 0xFF, StoreError) if isinstance(code, int) else StoreError
    pg = _pg_kind(orig)
    if pg is not None:
        if pg is StoreLocked:
            return pg(f"database {where}: another writer held the lock for longer than "
                      f"{BUSY_TIMEOUT_MS // 1000} s; try again ({message})")
        if pg is StoreMissing and not getattr(orig, "sqlstate", None):
            return pg(f"cannot connect to database {where}: {message}")
        if pg is StoreSchemaError:
            return pg(f"database {where} is not initialised (run `blockd init`) or not a "
                      f"blockd database: {message}")
        return pg(f"database {where}: {message}")
    if kind is StoreLocked:
        return kind(f"database {where} is locked by another process "
                    f"(waited {BUSY_TIMEOUT_MS // 1000} s); try again")
    if kind is StoreDamaged:
        return kind(f"database {where} is not a blockd database or is damaged: {message}")
    if kind is StoreReadOnly:
        return kind(f"database {where} is read-only for this user: {message}")
    return kind(f"database {where}: {message}")


CONNECT_TIMEOUT_S = 5  # a PostgreSQL server that does not answer is unreachable


def make_engine(db: str, url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys; PostgreSQL
    a connect timeout (a daemon must notice an unreachable server, not hang on it), a
    pool that tests connections, so a restarted server is used again, and no server-side
    prepared statements: their generic plan for a lookup of 500 target values ignored
    the values' index (10k targets added to an order of 20k took 13 s instead of 1 s)."""
    from sqlalchemy import create_engine

    kwargs: dict[str, Any] = {}
    if url.startswith("postgresql"):
        kwargs = {"pool_pre_ping": True,
                  "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S,
                                   "application_name": "blockd",
                                   "prepare_threshold": None}}
    try:
        engine = create_engine(url, **kwargs)
    except Exception as exc:  # bad URL or missing driver: one line, no traceback
        raise StoreError(f"cannot use database {redact(db)!r}: "
                         f"{' '.join(str(exc).split())}") from None
    if engine.dialect.name == "sqlite":
        _sqlite_setup(engine)
    return engine


def redact(db: str) -> str:
    """``db`` without a password (URLs are printed in errors and status lines)."""
    scheme, sep, rest = db.partition("://")
    if not sep or "@" not in rest:
        return db
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}@{host}" if user else f"{scheme}://{host}"


def _sqlite_setup(engine: Engine) -> None:
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (IMMEDIATE for writers)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys = ON")
        try:
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
        except Exception:  # a read-only file keeps its journal mode; reading still works
            pass
        cur.close()


def quick_check(path: Path, budget: float = 10.0) -> list[str] | None:
    """SQLite's ``PRAGMA quick_check`` (every page readable, b-trees well formed),
    abandoned after ``budget`` seconds so a huge store cannot stall a daemon: the
    problems found (empty = intact), or None when it ran out of time."""
    deadline = time.monotonic() + budget
    # a connection of its own: a pooled one answers from its page cache, which does
    # not notice pages overwritten behind SQLite's back. Read-only, so closing it can
    # never checkpoint a WAL into a damaged file.
    try:
        raw = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                              timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        return [str(exc)]
    try:
        raw.set_progress_handler(lambda: int(time.monotonic() > deadline), 20_000)
        rows = [str(r[0]) for r in raw.execute("PRAGMA quick_check(20)")]
    except sqlite3.OperationalError as exc:
        if "interrupt" in str(exc):
            return None
        return [str(exc)]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    finally:
        raw.close()
    return [] if rows == ["ok"] else rows


class FileProbe:
    """Is the SQLite file under an open handle still there, still SQLite, the same file?

    A long-lived connection reads from its page cache and would not notice that the file
    was deleted, replaced or overwritten; daemons probe before each poll. The header is
    read through a descriptor that is never closed: closing any descriptor of a SQLite
    file drops every POSIX lock this process holds on it, which lets another writer
    corrupt the database.
    """

    def __init__(self, path: Path, where: str) -> None:
        self.path = path
        self.where = where
        self.inode: int | None = None

    def check(self) -> None:
        try:
            ident = self.path.stat().st_ino
            magic = os.pread(_probe_fd(self.path, ident), 16, 0)
        except FileNotFoundError:
            raise StoreMissing(f"database {self.where}: no such file") from None
        except OSError as exc:
            raise StoreError(f"database {self.where}: {exc.strerror}") from None
        if magic != SQLITE_MAGIC:
            raise StoreDamaged(f"database {self.where} is not a blockd database or is damaged")
        if self.inode is None:
            self.inode = ident
        elif ident != self.inode:
            raise StoreReplaced(f"database {self.where} was replaced; reopening")


_PROBE_FDS: dict[tuple[str, int], int] = {}


def _probe_fd(path: Path, inode: int) -> int:
    """A read-only descriptor per (path, inode), opened once and kept for the process's
    life (see FileProbe: closing it would release SQLite's locks)."""
    key = (str(path), inode)
    fd = _PROBE_FDS.get(key)
    if fd is None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        actual = os.fstat(fd).st_ino
        _PROBE_FDS[(str(path), actual)] = fd  # kept, never closed, whatever file it is
        if actual != inode:  # replaced between stat and open: the next poll sees it
            raise OSError(errno.EAGAIN, "database file changed while probing")
    return fd
