"""Backup and restore of a SQLite store that are safe while the daemons run.

Copying the database file by hand is not: a running daemon's WAL (``-wal``/``-shm``) beside
a copied-in file is replayed into it by the next opener, leaving a hybrid of two histories
or a malformed file. Both directions here go through SQLite's online backup API, so
SQLite's own locking and WAL handle every reader and writer: a backup is a consistent
snapshot, and a restore writes the backup's pages *into* the live database (same file, same
WAL) instead of replacing the file under the daemons. Only a live file that SQLite cannot
open at all is moved aside (with its ``-wal``/``-shm``) and replaced.

Every copy is proven before it is trusted: the journal's chain and the tables' replay
(:mod:`blockd.store.audit`) and ``PRAGMA quick_check``.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from blockd.store.engine import (
    BUSY_TIMEOUT_MS,
    SQLITE_MAGIC,
    StoreDamaged,
    StoreError,
    database_url,
)
from blockd.store.store import Store

SIDE_FILES = ("-wal", "-shm")


@dataclass(frozen=True, slots=True)
class Proof:
    """What a proven copy holds."""

    path: Path
    seq: int
    head: str | None
    orders: int
    targets: int
    size: int


def sqlite_path(db: str) -> Path:
    """The SQLite file behind ``db``; refuses other databases (use their own tools)."""
    url, path = database_url(db)
    if path is None:
        raise StoreError(f"{url.split('@')[-1]}: not a SQLite file; back up PostgreSQL "
                         "with pg_dump and restore with pg_restore")
    return path


def prove(path: Path) -> Proof:
    """Open ``path`` as a store and prove it (chain, replay == tables, page check)."""
    if not path.is_file():
        raise StoreError(f"{path}: no such file")
    store = Store.open(f"sqlite:///file:{path.resolve()}?mode=ro&uri=true")
    try:
        damage = store.quick_check(60.0)
        if damage:
            raise StoreDamaged(f"{path} is damaged: {damage[0]}")
        problems = store.verify()
        if problems:
            raise StoreDamaged(f"{path} does not prove its journal: {problems[0]}"
                               + (f" (and {len(problems) - 1} more)" if len(problems) > 1
                                  else ""))
        head = store.head()
        stats = store.stats()
        return Proof(path, head.seq if head else 0, head.hash if head else None,
                     sum(stats[s] for s in ("active", "suspended", "lifted")),
                     stats["targets"], path.stat().st_size)
    finally:
        store.close()


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def backup(db: str, target: Path, *, force: bool = False) -> Proof:
    """An online, consistent copy of the live store at ``target``, proven, then renamed
    into place (a failed or unproven copy never appears under ``target``)."""
    live = sqlite_path(db)
    if not live.is_file():
        raise StoreError(f"no database at {live}")
    if target.exists() and not force:
        raise StoreError(f"{target} exists; --force replaces it")
    if target.resolve() == live.resolve():
        raise StoreError(f"{target} is the live database")
    target = target.resolve()
    tmp = target.with_name(f".{target.name}.{time.time_ns()}.tmp")
    try:
        src = _connect(live)
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            dst.close()
            src.close()
        proof = prove(tmp)
        tmp.replace(target)
    except sqlite3.Error as exc:
        raise StoreError(f"backup of {live} failed: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return Proof(target, proof.seq, proof.head, proof.orders, proof.targets,
                 target.stat().st_size)


def live_head(db: str) -> tuple[int, str] | None:
    """The live store's journal head, if it can be read at all."""
    try:
        store = Store.open(db)
    except StoreError:
        return None
    try:
        head = store.head()
        return (head.seq, head.hash) if head else None
    except StoreError:
        return None
    finally:
        store.close()


def restore(db: str, source: Path) -> tuple[Proof, Path | None]:
    """Write the proven backup ``source`` into the live store; (proof, where a live file
    SQLite could not open was moved, or None). ``source`` is only read."""
    proof = prove(source)
    live = sqlite_path(db)
    moved: Path | None = None
    if live.exists():
        if _is_sqlite(live):
            try:
                _copy_into(source, live)
                return proof, None
            except sqlite3.DatabaseError as exc:
                if "not a database" not in str(exc) and "malformed" not in str(exc):
                    raise StoreError(f"restore into {live} failed: {exc}") from None
        # never opened by SQLite here: opening it would replay its WAL into it first
        moved = _move_aside(live)
    live.parent.mkdir(parents=True, exist_ok=True)
    tmp = live.with_name(f".{live.name}.{time.time_ns()}.restore")
    try:
        _copy_into(source, tmp)
        for side in SIDE_FILES:  # nothing stale may be replayed into the new file
            Path(str(live) + side).unlink(missing_ok=True)
        tmp.replace(live)
    except sqlite3.Error as exc:
        raise StoreError(f"restore into {live} failed: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return proof, moved


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as fh:  # (this process holds no SQLite handle on it)
        return fh.read(16) == SQLITE_MAGIC


def _copy_into(source: Path, target: Path) -> None:
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    dst = _connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _move_aside(live: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = live.with_name(f"{live.name}.damaged-{stamp}")
    live.replace(aside)
    for side in SIDE_FILES:
        path = Path(str(live) + side)
        if path.exists():
            path.replace(Path(str(aside) + side))
    return aside
