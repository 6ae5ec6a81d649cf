"""Versioned schema: create a new store at the head version, upgrade old ones step by step.

A fresh database is created from the current tables and stamped with SCHEMA_VERSION. An
existing one runs each ``STEPS[v]`` (upgrading v -> v+1) in one transaction, so a failed
upgrade leaves the old schema intact. Never drop-and-create: that would lose orders.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, inspect, text
from sqlmodel import SQLModel

from blockd.core.model import BlockdError
from blockd.store import tables
from blockd.store.tables import SCHEMA_VERSION

# STEPS[v] upgrades a schema at version v to v + 1. Version 1 is the first release.
STEPS: dict[int, Callable[[Connection], None]] = {}


class SchemaError(BlockdError):
    pass


def current_version(conn: Connection) -> int:
    """0 for an empty database (no blockd tables yet)."""
    if not inspect(conn).has_table("meta"):
        return 0
    row = conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).first()
    return int(row[0]) if row else 0


def _stamp(conn: Connection, version: int) -> None:
    conn.execute(text("DELETE FROM meta WHERE key = 'schema_version'"))
    conn.execute(
        text("INSERT INTO meta (key, value) VALUES ('schema_version', :v)"), {"v": str(version)}
    )


def upgrade(conn: Connection) -> tuple[int, int]:
    """Bring the schema to SCHEMA_VERSION inside the caller's transaction; (from, to)."""
    start = current_version(conn)
    if start > SCHEMA_VERSION:
        raise SchemaError(
            f"database schema v{start} is newer than this blockd understands "
            f"(v{SCHEMA_VERSION}); upgrade blockd"
        )
    if start == 0:
        SQLModel.metadata.create_all(conn, tables=[
            SQLModel.metadata.tables[name] for name in tables.TABLES])
        _stamp(conn, SCHEMA_VERSION)
        return 0, SCHEMA_VERSION
    for version in range(start, SCHEMA_VERSION):
        STEPS[version](conn)
        _stamp(conn, version + 1)
    return start, SCHEMA_VERSION
