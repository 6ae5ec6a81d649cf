"""Copy a whole store into an empty database (``blockd store migrate``): SQLite to
PostgreSQL when appliances start sharing one store, or back.

Every table is copied row for row (ids, journal seqs and hashes unchanged) from one
consistent snapshot of the source into one transaction on the destination, so a failed
copy leaves the destination as empty as it was. The copy is then proven like any store
(journal chain, tables == replay), and its counts compared with the source's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Table, func, inspect, select, text
from sqlmodel import SQLModel

from blockd.core.model import InputError
from blockd.store import tables
from blockd.store.engine import StoreError, database_url
from blockd.store.store import Store

ROWS = 5000  # rows per INSERT
SERIAL = ("orders", "targets", "verify_runs")  # their id column's sequence follows the copy


@dataclass(frozen=True, slots=True)
class Copied:
    source: str
    destination: str
    rows: dict[str, int]
    seq: int
    head: str | None


def _open(field: str, db: str, *, create: bool = False) -> Store:
    """The store behind ``db``, or an InputError naming the option."""
    if not db.strip():
        raise InputError(field, "must not be empty")
    try:
        store = Store.open(db, create=create)
    except StoreError as exc:
        raise InputError(field, str(exc)) from None
    try:
        store.schema_version()  # reachable (a new destination is not checked by open)
    except StoreError as exc:
        store.close()
        raise InputError(field, str(exc)) from None
    return store


def _same(a: str, b: str) -> bool:
    (url_a, path_a), (url_b, path_b) = database_url(a), database_url(b)
    if path_a is not None and path_b is not None:
        return path_a.resolve() == path_b.resolve()
    return url_a == url_b


def migrate(source: str, destination: str,
            progress: Callable[[str, int], None] | None = None) -> Copied:
    """Copy ``source`` into the empty ``destination``; proven before it returns."""
    if _same(source, destination):
        raise InputError("--to", "is the same database as --from")
    src = _open("--from", source)
    try:
        dst = _open("--to", destination, create=True)
        try:
            return _copy(src, dst, progress)
        finally:
            dst.close()
    finally:
        src.close()


def _copy(src: Store, dst: Store, progress: Callable[[str, int], None] | None) -> Copied:
    with dst.engine.connect() as conn:
        present = sorted(inspect(conn).get_table_names())
    if present:
        raise InputError("--to", f"{dst.where} is not empty (it holds table "
                         f"{present[0]!r}); migrate only into an empty database")
    problems = src.verify()
    if problems:
        raise InputError("--from", f"{src.where} does not prove its journal: {problems[0]}")
    rows: dict[str, int] = {}
    with src._read() as reading, dst._write() as writing:
        from blockd.store import migrations

        migrations.upgrade(writing.connection())
        out = writing.connection()
        for name in tables.TABLES:
            table: Table = SQLModel.metadata.tables[name]
            query = select(table)
            if name == "meta":  # the destination's own schema stamp stays
                query = query.where(table.c.key != "schema_version")
            result = reading.connection().execution_options(yield_per=ROWS).execute(
                query.order_by(*table.primary_key.columns))
            count = 0
            for batch in result.mappings().partitions(ROWS):
                out.execute(table.insert(), [dict(r) for r in batch])
                count += len(batch)
                if progress is not None:
                    progress(name, len(batch))
            rows[name] = count
        if dst.postgres:  # the next id after the copied ones, not 1
            for name in SERIAL:
                out.execute(text(
                    f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                    f"COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) FROM {name}"))
        for name in tables.TABLES:  # what arrived is what was read
            table = SQLModel.metadata.tables[name]
            stored = out.execute(select(func.count()).select_from(table)).scalar_one()
            expected = rows[name] + (1 if name == "meta" else 0)
            if stored != expected:
                raise StoreError(f"copy of table {name} into {dst.where} holds {stored} rows, "
                                 f"not {expected}; nothing was written")
    problems = dst.verify()
    if problems:  # (the copy is committed: say so, the destination is not to be used)
        raise StoreError(f"the copy in {dst.where} does not prove its journal: {problems[0]}")
    head = dst.head()
    return Copied(src.where, dst.where, rows, head.seq if head else 0,
                  head.hash if head else None)
