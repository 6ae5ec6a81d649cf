"""The quick commands' store: a SQLite file read and written with the standard library's
``sqlite3`` driver, for `check`, `status`, `order show` and `order target add`.

Importing SQLAlchemy and sqlmodel costs about 0.45 s, more than the 0.3 s an engineer's
one-line command may take. These few reads and the one write run the same SQL as
:class:`blockd.store.store.Store` on the same tables, in the same transactions (a
snapshot per read, ``BEGIN IMMEDIATE`` for the write), with the same typed errors;
``tests/test_store_lite.py`` checks both give the same answers and write the same rows.
Anything else, and any store that is not a SQLite file, goes through ``Store``.
"""

from __future__ import annotations

import ipaddress
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

from blockd.core.hits import HitQuery, HitSummary, from_groups
from blockd.core.journal import (
    STORE_ADOPT,
    TARGET_ADD,
    JournalEntry,
    adopted_heads,
    make_entry,
    target_add_payloads,
)
from blockd.core.model import InputError, OrderRecord, Status, Target, TargetKind
from blockd.core.names import name_suffixes, target_from_parts
from blockd.core.timeparse import to_utc
from blockd.store import hitsql
from blockd.store.engine import (
    BUSY_TIMEOUT_MS,
    StoreConflict,
    StoreMissing,
    check_version,
    explain_driver,
    quick_check,
)
from blockd.store.records import Forced, OrderSummary, by_order

INSERT_BATCH = 5000  # as Store: target rows per executemany
_ORDER_COLUMNS = ("id, reference, authority, issued_on, received_at, status, jurisdiction, "
                  "effective_from, effective_until, requested_by, legal_basis, notice, "
                  "contact, appeal, policy, status_reason")


_ORDER_COLUMNS_O = ", ".join("o." + c.strip() for c in _ORDER_COLUMNS.split(","))


class LiteStore:
    """One SQLite file, opened with ``sqlite3``; ``LiteStore.open`` checks it as
    ``Store.open`` does (exists, initialised, at this blockd's schema)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)
        self._conn: sqlite3.Connection | None = None

    @classmethod
    def open(cls, path: Path) -> LiteStore:
        try:
            exists = path.exists()
        except OSError as exc:
            raise StoreMissing(f"cannot use database {str(path)[:200]}: {exc.strerror}") \
                from None
        if not exists:
            raise StoreMissing(f"no database at {path}; run `blockd init` to create it")
        store = cls(path)
        check_version(store.where, store.schema_version())
        return store

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                       isolation_level=None, check_same_thread=False)
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                conn.execute("PRAGMA foreign_keys = ON")
            except sqlite3.Error as exc:
                raise explain_driver(exc, self.where) from None
            try:  # as Store's engine; a read-only file keeps its journal mode
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.Error:
                pass
            self._conn = conn
        return self._conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        try:
            conn.execute("BEGIN")  # one consistent snapshot
            try:
                yield conn
            finally:
                conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise explain_driver(exc, self.where) from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            raise StoreConflict(f"database {self.where}: conflicting change: {exc}") from None
        except sqlite3.Error as exc:
            raise explain_driver(exc, self.where) from None

    # -- reads -------------------------------------------------------------------

    def schema_version(self) -> int:
        with self._read() as conn:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                            "name = 'meta'").fetchone() is None:
                return 0
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def quick_check(self, budget: float = 10.0) -> list[str] | None:
        return quick_check(self.path, budget)

    def head(self) -> JournalEntry | None:
        with self._read() as conn:
            return _head(conn)

    def continues(self, seq: int, head_hash: str | None) -> bool:
        """As ``Store.continues``: the journal holds entry ``seq`` with this hash (seq 0
        is every journal's start), or a ``store.adopt`` entry names that head."""
        if seq == 0:
            return True
        with self._read() as conn:
            row = conn.execute("SELECT hash FROM journal WHERE seq = ?", (seq,)).fetchone()
            if row is not None and row[0] == head_hash:
                return True
            adoptions = [JournalEntry(*r) for r in conn.execute(
                "SELECT seq, at, actor, action, payload, prev_hash, hash FROM journal "
                "WHERE action = ? ORDER BY seq", (STORE_ADOPT,))]
        return any((seq, head_hash) in adopted_heads(e.data) for e in adoptions)

    def journal(self, reference: str | None = None) -> list[JournalEntry]:
        """Every entry (of one order: its payload names the reference), oldest first."""
        sql, params = "SELECT seq, at, actor, action, payload, prev_hash, hash FROM journal", ()
        if reference is not None:  # as Store.journal: canonical JSON holds the exact text
            needle = '"reference":' + json.dumps(reference, ensure_ascii=False)
            escaped = needle.replace("/", "//").replace("%", "/%").replace("_", "/_")
            sql += " WHERE payload LIKE ? ESCAPE '/'"
            params = (f"%{escaped}%",)  # type: ignore[assignment]
        with self._read() as conn:
            return [JournalEntry(*r) for r in conn.execute(sql + " ORDER BY seq", params)]

    def stats(self) -> dict[str, int]:
        with self._read() as conn:
            by_status = dict(conn.execute(
                "SELECT status, count(*) FROM orders GROUP BY status").fetchall())
            targets = conn.execute("SELECT count(*) FROM targets").fetchone()[0]
            entries = conn.execute("SELECT count(*) FROM journal").fetchone()[0]
        out = {s.value: int(by_status.get(s.value, 0)) for s in Status}
        out["targets"] = int(targets)
        out["journal_entries"] = int(entries)
        return out

    def list_orders(self, status: Status | None = None) -> list[OrderSummary]:
        where = " WHERE o.status = ?" if status is not None else ""
        sql = (f"SELECT {_ORDER_COLUMNS_O}, n FROM orders o LEFT OUTER JOIN "
               "(SELECT order_id, count(*) AS n FROM targets GROUP BY order_id) c "
               f"ON o.id = c.order_id{where} ORDER BY o.received_at, o.reference")
        with self._read() as conn:
            rows = conn.execute(sql, (status.value,) if status is not None else ())
            return [OrderSummary(_record(r[:-1]), int(r[-1] or 0)) for r in rows]

    def get_order(self, reference: str, *, with_targets: bool = True) -> OrderRecord:
        with self._read() as conn:
            row = _require(conn, reference)
            order = _record(row)
            if with_targets:
                found = conn.execute("SELECT kind, value, match FROM targets WHERE "
                                     "order_id = ?", (row[0],))
                order = replace(order, targets=frozenset(
                    target_from_parts(k, v, m) for k, v, m in found))
            return order

    def some_targets(self, reference: str, limit: int) -> tuple[list[Target], int, set[str]]:
        """As ``Store.some_targets``: the first ``limit`` (0: all), the count, the kinds."""
        with self._read() as conn:
            order_id = _require(conn, reference)[0]
            sql = ("SELECT kind, value, match FROM targets WHERE order_id = ? "
                   "ORDER BY kind, value, match")
            if limit:
                sql += f" LIMIT {int(limit)}"
            shown = [target_from_parts(k, v, m) for k, v, m in conn.execute(sql, (order_id,))]
            total = conn.execute("SELECT count(*) FROM targets WHERE order_id = ?",
                                 (order_id,)).fetchone()[0]
            kinds = {str(k) for (k,) in conn.execute(
                "SELECT DISTINCT kind FROM targets WHERE order_id = ?", (order_id,))}
        return shown, int(total), kinds

    def candidates(self, subject: Target) -> list[tuple[OrderRecord, list[Target]]]:
        """As ``Store.candidates``: only the orders and targets that could cover it."""
        if subject.kind is TargetKind.DOMAIN:
            values, kinds = name_suffixes(subject.value), ["domain"]
        else:
            ip = ipaddress.ip_address(subject.value)
            values = [str(ip)] + [str(ipaddress.ip_network((ip, plen), strict=False))
                                  for plen in range(ip.max_prefixlen)]
            kinds = ["ip", "prefix"]
        marks, kind_marks = ",".join("?" * len(values)), ",".join("?" * len(kinds))
        with self._read() as conn:
            by_id: dict[int, list[Target]] = {}
            for order_id, kind, value, match in conn.execute(
                    f"SELECT order_id, kind, value, match FROM targets WHERE value IN "
                    f"({marks}) AND kind IN ({kind_marks})", (*values, *kinds)):
                by_id.setdefault(order_id, []).append(target_from_parts(kind, value, match))
            if not by_id:
                return []
            rows = conn.execute(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE id IN "
                                f"({','.join('?' * len(by_id))})", tuple(by_id)).fetchall()
        return [(_record(r), by_id[r[0]]) for r in rows]

    def load_rows(self) -> Iterator[tuple[OrderRecord, Iterator[tuple[str, str, str]]]]:
        """As ``Store.load_rows``: every order with a stream of its rows, one snapshot."""
        with self._read() as conn:
            orders = {r[0]: r for r in conn.execute(f"SELECT {_ORDER_COLUMNS} FROM orders")}
            yield from by_order(orders, conn.execute(
                "SELECT order_id, kind, value, match FROM targets ORDER BY order_id"), _record)

    def enforcements(self, seqs: Sequence[int]) -> list[tuple[int, str, str, datetime]]:
        if not seqs:
            return []
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT seq, channel, instance, at FROM enforcements WHERE seq IN "
                f"({','.join('?' * len(seqs))}) ORDER BY at", tuple(seqs)).fetchall()
        return [(seq, ch, inst, to_utc(datetime.fromisoformat(at))) for seq, ch, inst, at in rows]

    def hit_summary(self, query: HitQuery, top: int | None = None) -> HitSummary:
        with self._read() as conn:
            run = _runner(conn)
            groups = hitsql.groups(run, query, top)
            keys = [g[0] for g in groups] if top is not None else None
            return from_groups(groups, lambda: hitsql.sketches(run, query, keys))

    # -- the one write -------------------------------------------------------------

    def add_targets(
        self, reference: str, targets: Sequence[Target], *, actor: str, at: datetime,
        forced: Forced | None = None, collateral: Sequence[str] = (),
    ) -> tuple[list[Target], list[Target]]:
        """As ``Store.add_targets``: (added, already present); the same journal entries
        and rows, in one ``BEGIN IMMEDIATE`` transaction."""
        with self._write() as conn:
            row = _require(conn, reference)
            order_id = row[0]
            if row[5] == Status.LIFTED.value:
                raise InputError("reference", f"order {reference} is lifted; it takes no targets")
            present = _present(conn, order_id, targets)
            added = [t for t in dict.fromkeys(targets) if t not in present]
            already = [t for t in targets if t in present]
            if not added:
                return [], already
            prev = _head(conn)
            first: JournalEntry | None = None
            for payload in target_add_payloads(
                    reference, added, forced.payload() if forced is not None else None,
                    collateral):
                prev = make_entry(prev, at, actor, TARGET_ADD, payload)
                conn.execute("INSERT INTO journal (seq, at, actor, action, payload, prev_hash, "
                             "hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (prev.seq, prev.at, prev.actor, prev.action, prev.payload,
                              prev.prev_hash, prev.hash))
                first = first or prev
            assert first is not None and prev is not None
            refused = forced.targets if forced is not None else frozenset()
            for i in range(0, len(added), INSERT_BATCH):
                conn.executemany(
                    "INSERT INTO targets (order_id, kind, value, match, added_seq, forced) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(order_id, t.kind.value, t.value, t.match.value, first.seq,
                      t in refused) for t in added[i : i + INSERT_BATCH]])
            conn.execute("UPDATE orders SET updated_seq = ? WHERE id = ?", (prev.seq, order_id))
            return added, already


def _head(conn: sqlite3.Connection) -> JournalEntry | None:
    row = conn.execute("SELECT seq, at, actor, action, payload, prev_hash, hash FROM journal "
                       "ORDER BY seq DESC LIMIT 1").fetchone()
    return JournalEntry(*row) if row is not None else None


def _require(conn: sqlite3.Connection, reference: str) -> tuple[Any, ...]:
    row = conn.execute(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE reference = ?",
                       (reference,)).fetchone()
    if row is None:
        raise InputError("reference", f"no order {reference!r}")
    return tuple(row)


def _present(conn: sqlite3.Connection, order_id: int, targets: Sequence[Target]) -> set[Target]:
    found: set[Target] = set()
    for i in range(0, len(targets), 500):
        values = list({t.value for t in targets[i : i + 500]})
        found.update(target_from_parts(k, v, m) for k, v, m in conn.execute(
            f"SELECT kind, value, match FROM targets WHERE order_id = ? AND value IN "
            f"({','.join('?' * len(values))})", (order_id, *values)))
    return found


def _instant(text: str | None) -> datetime | None:
    """A DATETIME column as SQLAlchemy's SQLite dialect writes it (naive UTC text)."""
    return to_utc(datetime.fromisoformat(text)) if text else None


def _record(row: Sequence[Any]) -> OrderRecord:
    (_, reference, authority, issued_on, received_at, status, jurisdiction, effective_from,
     effective_until, requested_by, legal_basis, notice, contact, appeal, policy,
     status_reason) = row
    received = _instant(received_at)
    assert received is not None
    return OrderRecord(
        reference=reference, authority=authority, issued_on=date.fromisoformat(issued_on),
        received_at=received, status=Status(status), jurisdiction=jurisdiction,
        effective_from=_instant(effective_from), effective_until=_instant(effective_until),
        requested_by=requested_by, legal_basis=legal_basis, notice=notice, contact=contact,
        appeal=appeal, policy=policy, status_reason=status_reason,
    )


def _runner(conn: sqlite3.Connection) -> hitsql.Run:
    """hitsql's queries on this connection (dates bound as ISO text, as SQLAlchemy does)."""
    def run(sql: str, params: Mapping[str, Any]) -> Iterable[Sequence[Any]]:
        bound = {k: v.isoformat() if isinstance(v, date) else v for k, v in params.items()}
        return conn.execute(sql, bound)
    return run


def open_quick(db: str) -> LiteStore | None:
    """A LiteStore when ``db`` names a plain SQLite file, else None (use ``Store``)."""
    from blockd.store.engine import database_url

    url, path = database_url(db)
    if path is None or "?" in url:  # a URL with options goes through SQLAlchemy as given
        return None
    return LiteStore.open(path)

