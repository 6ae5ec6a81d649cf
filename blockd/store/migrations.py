"""Versioned schema: create a new store at the head version, upgrade old ones step by step.

A fresh database is created from the current tables and stamped with SCHEMA_VERSION. An
existing one runs each ``STEPS[v]`` (upgrading v -> v+1) in one transaction, so a failed
upgrade leaves the old schema intact. Never drop-and-create: that would lose orders.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from sqlalchemy import Connection, inspect, text
from sqlmodel import SQLModel

from blockd.core.journal import forced_specs
from blockd.core.model import BlockdError
from blockd.core.names import target_from_spec
from blockd.store import tables
from blockd.store.tables import SCHEMA_VERSION


def _v1_to_v2(conn: Connection) -> None:
    """targets.forced: which targets were forced past the guard, as a column.

    v1 kept this only in the journal (the ``forced`` payload of the entry that added the
    targets, naming each refused target in its refusal text); this is the one place that
    still reads it from there.
    """
    conn.execute(text("ALTER TABLE targets ADD COLUMN forced BOOLEAN NOT NULL DEFAULT false"))
    conn.execute(text("CREATE INDEX ix_targets_forced ON targets (forced)"))
    rows = conn.execute(text(
        "SELECT seq, payload FROM journal WHERE payload LIKE '%\"forced\":%' ORDER BY seq"))
    for seq, payload in rows.all():
        reference, specs = forced_specs(json.loads(payload))
        for spec in specs:
            target = target_from_spec(spec)
            conn.execute(text(
                "UPDATE targets SET forced = true WHERE added_seq = :seq AND kind = :k "
                "AND value = :v AND match = :m AND order_id = "
                "(SELECT id FROM orders WHERE reference = :ref)"),
                {"seq": seq, "k": target.kind.value, "v": target.value,
                 "m": target.match.value, "ref": reference})


def _v2_to_v3(conn: Connection) -> None:
    """Hits per channel with a distinct-client sketch, a per-order rollup, the enforcement
    timeline and `blockd verify` runs. v2 counted every channel into one row per (day,
    order, target): those counts are kept under channel ``any`` (and in the rollup)."""
    conn.execute(text("ALTER TABLE hits RENAME TO hits_v2"))
    SQLModel.metadata.create_all(conn, tables=[
        SQLModel.metadata.tables[name]
        for name in ("hits", "hit_orders", "hit_months", "hit_days", "enforcements",
                     "verify_runs")])
    conn.execute(text(
        "INSERT INTO hits (reference, day, target, channel, count) "
        "SELECT reference, day, target, 'any', count FROM hits_v2"))
    conn.execute(text(
        "INSERT INTO hit_orders (reference, day, channel, count) "
        "SELECT reference, day, 'any', SUM(count) FROM hits_v2 GROUP BY reference, day"))
    conn.execute(text(
        "INSERT INTO hit_months (reference, month, channel, count, first_day, last_day, "
        "buckets) SELECT reference, substr(day, 1, 7), channel, SUM(count), MIN(day), "
        "MAX(day), COUNT(*) FROM hit_orders GROUP BY reference, substr(day, 1, 7), channel"))
    conn.execute(text(
        "INSERT INTO hit_days (day, channel, count, buckets) SELECT day, channel, "
        "SUM(count), COUNT(*) FROM hit_orders GROUP BY day, channel"))
    conn.execute(text("DROP TABLE hits_v2"))


# STEPS[v] upgrades a schema at version v to v + 1. Version 1 is the first release.
STEPS: dict[int, Callable[[Connection], None]] = {1: _v1_to_v2, 2: _v2_to_v3}


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
