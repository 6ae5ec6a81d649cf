"""Read and write orders through the journal (SQLite by default, or PostgreSQL).

Every write is one transaction that appends journal entries and updates the materialised
``orders``/``targets`` tables together, so a crash or a refused input never leaves them
apart. SQLite runs in WAL mode with ``BEGIN IMMEDIATE`` for writers: one writing CLI and
any number of reading daemons at once, and sequence numbers allocated without races.
On PostgreSQL (several appliances sharing one store) every write transaction first takes
one transaction-level advisory lock, so writers on different machines are serialised
the same way and the hash chain never forks (the primary key on ``journal.seq`` would
refuse a fork anyway); each read is one REPEATABLE READ snapshot, and a write that
appended to the journal sends a NOTIFY on :data:`NOTIFY_CHANNEL` when it commits.
"""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session, col

from blockd.core.hits import HitBucket, HitQuery, HitSummary, from_groups
from blockd.core.journal import (
    HITS_PRUNE,
    ORDER_ADD,
    ORDER_AMEND,
    ORDER_STATUS,
    STORE_ADOPT,
    TARGET_ADD,
    TARGET_REMOVE,
    JournalEntry,
    adopted_heads,
    amend_payload,
    chunks,
    make_entry,
    order_payload,
    target_add_payloads,
)
from blockd.core.model import (
    InputError,
    OrderRecord,
    Status,
    Target,
    TargetKind,
    check_transition,
)
from blockd.core.names import name_suffixes, parse_address, target_from_parts
from blockd.core.timeparse import iso, to_utc
from blockd.store import hitsql, migrations
from blockd.store.engine import (
    BUSY_TIMEOUT_MS,
    FileProbe,
    StoreConflict,
    StoreMissing,
    check_version,
    database_url,
    explain,
    is_postgres,
    make_engine,
    quick_check,
    redact,
)
from blockd.store.records import Forced as Forced
from blockd.store.records import OrderSummary as OrderSummary
from blockd.store.records import by_order
from blockd.store.tables import (
    EnforcementRow,
    HitRow,
    JournalRow,
    OrderRow,
    TargetRow,
    VerifyRunRow,
)

INSERT_BATCH = 5000  # target rows per INSERT statement
WRITE_LOCK = 0x626C6F636B64  # "blockd": the advisory lock that serialises writers
NOTIFY_CHANNEL = "blockd_journal"  # payload: the new journal head's seq


class Store:
    """A handle on one store. ``Store.open`` checks it exists and is at the current schema."""

    def __init__(self, engine: Engine, where: str, path: Path | None) -> None:
        self.engine = engine
        self.where = where
        self.path = path
        self.db = str(path) if path is not None else str(engine.url)  # as opened
        self._probe = FileProbe(path, where) if path is not None else None
        self._pinned = threading.local()  # the session of this thread's snapshot()

    # -- opening -----------------------------------------------------------------

    @classmethod
    def open(cls, db: str, *, create: bool = False) -> Store:
        url, path = database_url(db)
        where = str(path) if path is not None else url.split("@")[-1]
        if path is not None:
            try:
                exists = path.exists()
            except OSError as exc:  # a name too long for the file system, say
                raise StoreMissing(f"cannot use database {where[:200]}: {exc.strerror}") \
                    from None
            if not create and not exists:
                raise StoreMissing(f"no database at {path}; run `blockd init` to create it")
            if create:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreMissing(f"cannot create {path.parent}: {exc.strerror}") from None
        if is_postgres(db):
            where = redact(db)
        store = cls(make_engine(db, url), where, path)
        store.db = db
        if not create:
            try:
                store._check_version()
            except BaseException:
                if store.postgres:  # a refused store leaves no server connection behind
                    store.close()  # (SQLite: unchanged, see shared.py on closing)
                raise
        return store

    def _check_version(self) -> None:
        check_version(self.where, self.schema_version())

    def probe(self) -> None:
        """Raise StoreError unless the SQLite file is still there, still SQLite and the
        same file (see :class:`blockd.store.engine.FileProbe`); no-op for a URL."""
        if self._probe is not None:
            self._probe.check()

    def init(self) -> tuple[int, int]:
        """Create or upgrade the schema; (version before, version after). Idempotent."""
        with self._write() as session:
            return migrations.upgrade(session.connection())

    def quick_check(self, budget: float = 10.0) -> list[str] | None:
        """SQLite's ``PRAGMA quick_check`` (every page readable, b-trees well formed),
        abandoned after ``budget`` seconds so a huge store cannot stall a daemon: the
        problems found (empty = intact), or None when it ran out of time. A damaged file
        may also raise StoreDamaged. On PostgreSQL always [] (its pages are for its own tools:
        data checksums, pg_amcheck)."""
        if self.engine.dialect.name != "sqlite" or self.path is None:
            return []
        return quick_check(self.path, budget)

    def schema_version(self) -> int:
        with self._read() as session:
            return migrations.current_version(session.connection())

    def close(self) -> None:
        self.engine.dispose()

    @property
    def postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Every read of this thread inside shares one consistent snapshot: a proof that
        reads the journal and then the tables must not see a write land between the two
        (another appliance's, on a shared store) as the tables disagreeing."""
        if getattr(self._pinned, "session", None) is not None:
            yield  # already inside one
            return
        with self._read() as session:
            self._pinned.session = session
            try:
                yield
            finally:
                self._pinned.session = None

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """One consistent snapshot (a follower reads the head and the rows together)."""
        pinned: Session | None = getattr(self._pinned, "session", None)
        if pinned is not None:  # inside snapshot(): its transaction, its errors
            yield pinned
            return
        try:
            with Session(self.engine) as session:
                if self.engine.dialect.name == "sqlite":
                    session.connection().exec_driver_sql("BEGIN")
                elif self.postgres:
                    session.connection().exec_driver_sql(
                        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield session
        except DBAPIError as exc:
            raise explain(exc, self.where) from None

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One atomic write, rolled back on any error, serialised with every other writer:
        BEGIN IMMEDIATE on SQLite, the advisory lock on PostgreSQL (given up after the
        busy timeout, as SQLite does)."""
        try:
            with Session(self.engine) as session:
                conn = session.connection()
                if self.engine.dialect.name == "sqlite":
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                elif self.postgres:
                    conn.exec_driver_sql(f"SET LOCAL lock_timeout = {BUSY_TIMEOUT_MS}")
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": WRITE_LOCK})
                yield session
                head = session.info.get("journal_head")
                if self.postgres and head is not None:  # delivered at commit, not before
                    conn.execute(text("SELECT pg_notify(:c, :p)"),
                                 {"c": NOTIFY_CHANNEL, "p": str(head)})
                session.commit()
        except IntegrityError as exc:
            raise StoreConflict(f"database {self.where}: conflicting change: {exc.orig}") \
                from None
        except DBAPIError as exc:
            raise explain(exc, self.where) from None

    # -- journal -----------------------------------------------------------------

    def _append(
        self, session: Session, prev: JournalEntry | None, at: datetime, actor: str,
        action: str, payload: dict[str, Any],
    ) -> JournalEntry:
        entry = make_entry(prev, at, actor, action, payload)
        session.info["journal_head"] = entry.seq
        session.add(JournalRow(
            seq=entry.seq, at=entry.at, actor=entry.actor, action=entry.action,
            payload=entry.payload, prev_hash=entry.prev_hash, hash=entry.hash,
        ))
        return entry

    def _head(self, session: Session) -> JournalEntry | None:
        row = session.execute(
            select(JournalRow).order_by(col(JournalRow.seq).desc()).limit(1)
        ).scalars().first()
        return _entry(row) if row is not None else None

    def head(self) -> JournalEntry | None:
        with self._read() as session:
            return self._head(session)

    def journal(
        self, since_seq: int = 0, since_at: datetime | None = None, limit: int | None = None,
        reference: str | None = None,
    ) -> list[JournalEntry]:
        """Entries after ``since_seq`` (and at or after ``since_at``), oldest first."""
        query = select(JournalRow).where(col(JournalRow.seq) > since_seq)
        if reference is not None:  # payloads are canonical JSON: the key/value text is exact
            needle = '"reference":' + json.dumps(reference, ensure_ascii=False)
            query = query.where(col(JournalRow.payload).contains(needle, autoescape=True))
        if since_at is not None:
            query = query.where(col(JournalRow.at) >= _at_text(since_at))
        query = query.order_by(col(JournalRow.seq))
        if limit is not None:
            query = query.limit(limit)
        with self._read() as session:
            return [_entry(r) for r in session.execute(query).scalars()]

    # -- writes ------------------------------------------------------------------

    def add_order(
        self, order: OrderRecord, targets: Sequence[Target], *, actor: str, at: datetime,
        forced: Forced | None = None, collateral: Sequence[str] = (),
    ) -> list[JournalEntry]:
        """Record a new order with its first targets; the reference must be new."""
        with self._write() as session:
            if self._order_row(session, order.reference) is not None:
                raise InputError("reference", f"order {order.reference} already exists")
            prev = self._head(session)
            batches = list(chunks(list(targets))) or [[]]
            payload: dict[str, Any] = {"order": order_payload(order), "targets": batches[0]}
            if forced is not None:
                payload["forced"] = forced.payload()
            if collateral:
                payload["collateral"] = list(collateral)
            entry = self._append(session, prev, at, actor, ORDER_ADD, payload)
            row = OrderRow(
                **{k: v for k, v in _order_columns(order).items()},
                created_seq=entry.seq, updated_seq=entry.seq,
            )
            session.add(row)
            session.flush()
            assert row.id is not None
            entries = [entry]
            for batch in batches[1:]:
                entries.append(self._append(
                    session, entries[-1], at, actor, TARGET_ADD,
                    {"reference": order.reference, "targets": batch},
                ))
            self._insert_targets(session, row.id, list(targets), entry.seq, forced)
            return entries

    def add_targets(
        self, reference: str, targets: Sequence[Target], *, actor: str, at: datetime,
        forced: Forced | None = None, collateral: Sequence[str] = (), unique: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[list[Target], list[Target]]:
        """Add targets to an order; (added, already present). Lifted orders take none.
        ``unique``: the caller dropped duplicates already (an importer of a million)."""
        with self._write() as session:
            row = self._require(session, reference)
            if row.status == Status.LIFTED.value:
                raise InputError("reference", f"order {reference} is lifted; it takes no targets")
            assert row.id is not None
            present = self._present(session, row.id, targets)
            added = [t for t in (targets if unique else dict.fromkeys(targets))
                     if t not in present]
            already = [t for t in targets if t in present]
            if not added:
                return [], already
            prev = self._head(session)
            first: JournalEntry | None = None
            for payload in target_add_payloads(
                    reference, added, forced.payload() if forced is not None else None,
                    collateral):
                prev = self._append(session, prev, at, actor, TARGET_ADD, payload)
                first = first or prev
            assert first is not None and prev is not None
            self._insert_targets(session, row.id, added, first.seq, forced, progress)
            row.updated_seq = prev.seq
            session.add(row)
            return added, already

    def remove_targets(
        self, reference: str, targets: Sequence[Target], *, actor: str, at: datetime,
    ) -> list[Target]:
        """Remove targets; every one must be on the order, else nothing changes."""
        with self._write() as session:
            row = self._require(session, reference)
            assert row.id is not None
            present = self._present(session, row.id, targets)
            missing = [t for t in targets if t not in present]
            if missing:
                raise InputError("target", f"{missing[0].spec} is not on order {reference}")
            removing = list(dict.fromkeys(targets))
            prev = self._head(session)
            for batch in chunks(removing):
                prev = self._append(
                    session, prev, at, actor, TARGET_REMOVE,
                    {"reference": reference, "targets": batch},
                )
            for t in removing:
                session.execute(
                    text(
                        "DELETE FROM targets WHERE order_id = :o AND kind = :k AND value = :v "
                        "AND match = :m"
                    ),
                    {"o": row.id, "k": t.kind.value, "v": t.value, "m": t.match.value},
                )
            assert prev is not None
            row.updated_seq = prev.seq
            session.add(row)
            return removing

    def set_status(
        self, reference: str, status: Status, reason: str, *, actor: str, at: datetime
    ) -> JournalEntry:
        """Suspend, resume or lift, with the reason recorded in the journal."""
        with self._write() as session:
            row = self._require(session, reference)
            check_transition(reference, Status(row.status), status)
            entry = self._append(
                session, self._head(session), at, actor, ORDER_STATUS,
                {"reference": reference, "status": status.value, "reason": reason},
            )
            row.status = status.value
            row.status_reason = reason
            row.updated_seq = entry.seq
            session.add(row)
            return entry

    def amend(self, reference: str, changes: Mapping[str, Any], reason: str, *, actor: str,
              at: datetime) -> JournalEntry:
        """Change an order's facts (``AMENDABLE`` fields), journaled with the previous
        values and the reason."""
        with self._write() as session:
            row = self._require(session, reference)
            payload = amend_payload(_record(row), changes, reason)
            entry = self._append(session, self._head(session), at, actor, ORDER_AMEND, payload)
            for key, value in changes.items():
                setattr(row, key, value)
            row.updated_seq = entry.seq
            session.add(row)
            return entry

    def adopt(
        self, replaces: Sequence[tuple[int, str]], *, reason: str, actor: str, at: datetime,
        source: str | None = None,
    ) -> JournalEntry:
        """Journal that this store is adopted in place of the heads daemons enforced
        (``replaces``: (seq, hash) pairs). A daemon that refused the store because its
        journal does not continue theirs follows it again once an entry names its head."""
        payload: dict[str, Any] = {
            "replaces": [{"seq": seq, "hash": h} for seq, h in sorted(set(replaces))],
            "reason": reason,
        }
        if source is not None:
            payload["source"] = source
        with self._write() as session:
            return self._append(session, self._head(session), at, actor, STORE_ADOPT, payload)

    def holds(self, seq: int, head_hash: str | None) -> bool:
        """Is entry ``seq`` of the journal the one with ``head_hash`` (does the journal
        continue a history that stood at that head)? Seq 0 is every journal's start."""
        if seq == 0:
            return True
        found = self.journal(seq - 1, limit=1)
        return bool(found) and found[0].seq == seq and found[0].hash == head_hash

    def continues(self, seq: int, head_hash: str | None) -> bool:
        """:meth:`holds`, or a ``store.adopt`` entry names that head: may a daemon that
        enforces it follow this store?"""
        return self.holds(seq, head_hash) or any(
            (seq, head_hash) in adopted_heads(e.data) for e in self.adoptions())

    def adoptions(self) -> list[JournalEntry]:
        """Every ``store.adopt`` entry, oldest first (few: one per restore or adoption)."""
        query = select(JournalRow).where(col(JournalRow.action) == STORE_ADOPT) \
            .order_by(col(JournalRow.seq))
        with self._read() as session:
            return [_entry(r) for r in session.execute(query).scalars()]

    # -- reads -------------------------------------------------------------------

    def get_order(self, reference: str, *, with_targets: bool = True) -> OrderRecord:
        with self._read() as session:
            row = self._require(session, reference)
            order = _record(row)
            if with_targets:
                assert row.id is not None
                order = replace(order, targets=frozenset(self._targets_of(session, [row.id])))
            return order

    def some_targets(self, reference: str, limit: int) -> tuple[list[Target], int, set[str]]:
        """The first ``limit`` targets in sort order (0: all), how many there are, and
        their kinds: `order show` of an order of 100,000 without loading them all."""
        with self._read() as session:
            row = self._require(session, reference)
            where = col(TargetRow.order_id) == row.id
            query = select(col(TargetRow.kind), col(TargetRow.value), col(TargetRow.match)) \
                .where(where).order_by(col(TargetRow.kind), col(TargetRow.value),
                                       col(TargetRow.match))
            if limit:
                query = query.limit(limit)
            shown = [target_from_parts(k, v, m) for k, v, m in session.execute(query)]
            total = int(session.scalar(select(func.count()).where(where)) or 0)
            kinds = {str(k) for (k,) in session.execute(
                select(col(TargetRow.kind)).where(where).distinct())}
        return shown, total, kinds

    def count_targets(self, reference: str) -> int:
        with self._read() as session:
            row = self._require(session, reference)
            return int(session.scalar(
                select(func.count()).select_from(TargetRow).where(col(TargetRow.order_id) == row.id)
            ) or 0)

    def list_orders(self, status: Status | None = None) -> list[OrderSummary]:
        counts = (
            select(col(TargetRow.order_id), func.count().label("n"))
            .group_by(col(TargetRow.order_id))
            .subquery()
        )
        query = select(OrderRow, counts.c.n).outerjoin(
            counts, col(OrderRow.id) == counts.c.order_id)
        if status is not None:
            query = query.where(col(OrderRow.status) == status.value)
        query = query.order_by(col(OrderRow.received_at), col(OrderRow.reference))
        with self._read() as session:
            return [OrderSummary(_record(r), int(n or 0)) for r, n in session.execute(query)]

    def load_orders(self) -> Iterator[tuple[OrderRecord, list[Target]]]:
        """Every order with its targets as objects (audits and small stores)."""
        for order, rows in self.load_rows():
            yield order, [target_from_parts(k, v, m) for k, v, m in rows]

    def load_rows(
        self, on_head: Callable[[JournalEntry | None], None] | None = None
    ) -> Iterator[tuple[OrderRecord, Iterator[tuple[str, str, str]]]]:
        """Every order with a stream of its (kind, value, match) rows, in one snapshot.

        Streams instead of building objects: compiling a million targets must not hold
        a million intermediate objects (the daemon's memory goal is 300 MB). Each order's
        rows are valid only until the next order is taken. ``on_head`` receives the
        journal head of the same snapshot, so a follower knows exactly where to go on.
        """
        with self._read() as session:
            if on_head is not None:
                on_head(self._head(session))
            rows = {r.id: r for r in session.execute(select(OrderRow)).scalars()}
            yield from by_order(rows, session.connection().exec_driver_sql(
                "SELECT order_id, kind, value, match FROM targets ORDER BY order_id"), _record)

    def named_before(self, subject: str) -> bool:
        """Does any order, in force or not, name this host (a normalised name or an IP)?
        The notice server asks, to tell a lifted block (503) from an unknown host (404)."""
        target = parse_address(subject) or Target(TargetKind.DOMAIN, subject)
        return bool(self.candidates(target))

    def candidates(self, subject: Target) -> list[tuple[OrderRecord, list[Target]]]:
        """Only the orders and targets that could cover ``subject`` (``blockd check``).

        The policy core still makes the decision; this keeps one check fast on a store
        with a million targets by not compiling the rest.
        """
        if subject.kind is TargetKind.DOMAIN:
            values = name_suffixes(subject.value)
            kinds = ["domain"]
        else:
            ip = ipaddress.ip_address(subject.value)
            values = [str(ip)] + [
                str(ipaddress.ip_network((ip, plen), strict=False))
                for plen in range(ip.max_prefixlen)
            ]
            kinds = ["ip", "prefix"]
        with self._read() as session:
            found = session.execute(
                select(col(TargetRow.order_id), col(TargetRow.kind), col(TargetRow.value),
                       col(TargetRow.match))
                .where(col(TargetRow.value).in_(values), col(TargetRow.kind).in_(kinds))
            ).all()
            by_id: dict[int, list[Target]] = {}
            for order_id, kind, value, match in found:
                by_id.setdefault(order_id, []).append(target_from_parts(kind, value, match))
            if not by_id:
                return []
            rows = session.execute(
                select(OrderRow).where(col(OrderRow.id).in_(list(by_id)))
            ).scalars()
            return [(_record(r), by_id[r.id]) for r in rows if r.id is not None]

    def stats(self) -> dict[str, int]:
        with self._read() as session:
            by_status: dict[str, int] = dict(session.execute(
                select(col(OrderRow.status), func.count()).group_by(col(OrderRow.status))
            ).all())
            targets = session.scalar(select(func.count()).select_from(TargetRow)) or 0
            entries = session.scalar(select(func.count()).select_from(JournalRow)) or 0
        out = {s.value: int(by_status.get(s.value, 0)) for s in Status}
        out["targets"] = int(targets)
        out["journal_entries"] = int(entries)
        return out

    def forced_targets(self) -> set[str]:
        """Specs of targets the guard refused but an engineer forced (with a journaled
        justification): the only guard refusals the kernel may still receive."""
        query = select(col(TargetRow.kind), col(TargetRow.value), col(TargetRow.match)).where(
            col(TargetRow.forced).is_(True))  # "IS 1": SQLite uses ix_targets_forced
        with self._read() as session:
            return {target_from_parts(k, v, m).spec for k, v, m in session.execute(query)}

    # -- hits --------------------------------------------------------------------

    def add_hits(self, buckets: Sequence[HitBucket]) -> None:
        """Add batched hit buckets (one transaction per flush, never one per query):
        counts add up, client sketches merge (read and written under the write lock)."""
        if buckets:
            with self._write() as session:
                hitsql.add(session, buckets)

    def hits(self, reference: str | None = None) -> list[tuple[date, str, str, int]]:
        """(day, order, target, count) over all channels: the raw buckets, for tests and
        tools (``blockd hits`` reads through :meth:`hit_buckets`)."""
        query = select(col(HitRow.day), col(HitRow.reference), col(HitRow.target),
                       func.sum(col(HitRow.count))).group_by(
            col(HitRow.day), col(HitRow.reference), col(HitRow.target)).order_by(
            col(HitRow.day), col(HitRow.reference), col(HitRow.target))
        if reference is not None:
            query = query.where(col(HitRow.reference) == reference)
        with self._read() as session:
            return [(d, r, t, int(n)) for d, r, t, n in session.execute(query)]

    def hit_buckets(self, query: HitQuery) -> Iterator[HitBucket]:
        """Stored daily buckets matching ``query``."""
        with self._read() as session:
            yield from hitsql.buckets(hitsql.session_runner(session), query)

    def hit_summary(self, query: HitQuery, top: int | None = None) -> HitSummary:
        """What `blockd hits` prints: counts summed by the database (whole months from
        the monthly totals), client sketches merged for the groups shown."""
        with self._read() as session:
            run = hitsql.session_runner(session)
            groups = hitsql.groups(run, query, top)
            keys = [g[0] for g in groups] if top is not None else None
            return from_groups(groups, lambda: hitsql.sketches(run, query, keys))

    def prune_hits(self, cutoffs: Mapping[str, date], default: date, *, actor: str,
                   at: datetime) -> JournalEntry | None:
        """Delete hit buckets older than each order's policy allows (``cutoffs``: policy
        name -> first day kept; ``default`` for any other) and journal the run as one
        entry (how many buckets, which days), or nothing if nothing was due."""
        with self._write() as session:
            deleted, first, last = hitsql.prune(session, cutoffs, default)
            if not deleted:
                return None
            payload = {"buckets": deleted, "from": first, "to": last,
                       "kept_from": {name: d.isoformat() for name, d in sorted(cutoffs.items())}}
            return self._append(session, self._head(session), at, actor, HITS_PRUNE, payload)

    # -- verify runs -----------------------------------------------------------------

    def record_verify(self, at: datetime, head: JournalEntry | None, checked: int,
                      failed: int, sampled: bool, result: Mapping[str, Any]) -> int:
        """Store one `blockd verify` run; its id."""
        with self._write() as session:
            row = VerifyRunRow(at=_at_text(at), head_seq=head.seq if head else 0,
                               head_hash=head.hash if head else None, checked=checked,
                               failed=failed, sampled=sampled,
                               result=json.dumps(result, sort_keys=True))
            session.add(row)
            session.flush()
            assert row.id is not None
            return row.id

    def last_verify(self, reference: str | None = None) -> dict[str, Any] | None:
        """The newest run (that checked ``reference``, if given), as stored."""
        query = select(VerifyRunRow).order_by(col(VerifyRunRow.id).desc())
        with self._read() as session:
            for row in session.execute(query).scalars():
                result = json.loads(row.result)
                if reference is not None and reference not in result.get("orders", {}):
                    continue
                return {"id": row.id, "at": row.at, "head_seq": row.head_seq,
                        "head_hash": row.head_hash, "checked": row.checked,
                        "failed": row.failed, "sampled": row.sampled, **result}
        return None

    # -- enforcement timeline ------------------------------------------------------

    def record_enforcements(self, rows: Sequence[tuple[int, str, str, datetime]]) -> None:
        """(journal seq, channel, instance, when first enforced); a row already there
        keeps its first time (a restarted daemon applies the same entries again)."""
        if not rows:
            return
        with self._write() as session:
            session.execute(text(
                "INSERT INTO enforcements (seq, channel, instance, at) "
                "VALUES (:seq, :channel, :instance, :at) ON CONFLICT DO NOTHING"),
                [{"seq": seq, "channel": ch, "instance": inst, "at": _at_text(at)}
                 for seq, ch, inst, at in rows])

    def enforcements(self, seqs: Sequence[int]) -> list[tuple[int, str, str, datetime]]:
        """The timeline rows of these journal entries, earliest first."""
        query = select(EnforcementRow).where(col(EnforcementRow.seq).in_(list(seqs))) \
            .order_by(col(EnforcementRow.at))
        with self._read() as session:
            return [(r.seq, r.channel, r.instance, to_utc(datetime.fromisoformat(r.at)))
                    for r in session.execute(query).scalars()]

    def journal_actions(self, after: int, upto: int) -> list[tuple[int, str]]:
        """(seq, action) of the entries after ``after`` up to ``upto`` (no payloads)."""
        query = select(col(JournalRow.seq), col(JournalRow.action)).where(
            col(JournalRow.seq) > after, col(JournalRow.seq) <= upto).order_by(
            col(JournalRow.seq))
        with self._read() as session:
            return [(int(seq), str(action)) for seq, action in session.execute(query)]

    def last_enforced(self, channel: str, instance: str) -> int:
        """The newest journal seq this instance recorded (0: none): where it resumes."""
        with self._read() as session:
            found = session.execute(text(
                "SELECT MAX(seq) FROM enforcements WHERE channel = :c AND instance = :i"),
                {"c": channel, "i": instance}).scalar()
        return int(found or 0)

    # -- audit -------------------------------------------------------------------

    def verify(self) -> list[str]:
        """Problems found (empty = the journal is intact and the tables match it)."""
        from blockd.store.audit import verify

        return verify(self)

    def forced_flags(self) -> list[tuple[str, str, int, bool]]:
        """(order reference, target spec, added_seq, forced) of every target row."""
        query = select(col(OrderRow.reference), col(TargetRow.kind), col(TargetRow.value),
                       col(TargetRow.match), col(TargetRow.added_seq), col(TargetRow.forced)
                       ).join(OrderRow, col(OrderRow.id) == col(TargetRow.order_id))
        with self._read() as session:
            return [(ref, target_from_parts(k, v, m).spec, seq, bool(forced))
                    for ref, k, v, m, seq, forced in session.execute(query)]

    # -- helpers -----------------------------------------------------------------

    def _order_row(self, session: Session, reference: str) -> OrderRow | None:
        query = select(OrderRow).where(col(OrderRow.reference) == reference)
        return session.execute(query).scalars().first()

    def _require(self, session: Session, reference: str) -> OrderRow:
        row = self._order_row(session, reference)
        if row is None:
            raise InputError("reference", f"no order {reference!r}")
        return row

    def _present(self, session: Session, order_id: int, targets: Sequence[Target]) -> set[Target]:
        found: set[Target] = set()
        if not self._has_targets(session, order_id):
            return found  # a first import into an order: nothing to look up
        for i in range(0, len(targets), 500):  # slices: no second million-value set
            values = list({t.value for t in targets[i : i + 500]})
            rows = session.execute(
                select(col(TargetRow.kind), col(TargetRow.value), col(TargetRow.match)).where(
                    col(TargetRow.order_id) == order_id,
                    col(TargetRow.value).in_(values),
                )
            )
            found.update(target_from_parts(k, v, m) for k, v, m in rows)
        return found

    @staticmethod
    def _has_targets(session: Session, order_id: int) -> bool:
        return session.execute(select(col(TargetRow.order_id)).where(
            col(TargetRow.order_id) == order_id).limit(1)).first() is not None

    def _targets_of(self, session: Session, order_ids: list[int]) -> list[Target]:
        rows = session.execute(
            select(col(TargetRow.kind), col(TargetRow.value), col(TargetRow.match)).where(
                col(TargetRow.order_id).in_(order_ids)
            )
        )
        return [target_from_parts(k, v, m) for k, v, m in rows]

    def _insert_targets(
        self, session: Session, order_id: int, targets: list[Target], seq: int,
        forced: Forced | None = None, progress: Callable[[int], None] | None = None,
    ) -> None:
        if not targets:
            return
        refused = forced.targets if forced is not None else frozenset()
        insert = TargetRow.__table__.insert()  # type: ignore[attr-defined]
        # in batches: a million row dicts at once would cost the CLI ~400 MB
        for i in range(0, len(targets), INSERT_BATCH):
            session.execute(insert, [
                {"order_id": order_id, "kind": t.kind.value, "value": t.value,
                 "match": t.match.value, "added_seq": seq, "forced": t in refused}
                for t in targets[i : i + INSERT_BATCH]
            ])
            if progress is not None:
                progress(min(INSERT_BATCH, len(targets) - i))
        if self.postgres and len(targets) >= INSERT_BATCH:
            # fresh statistics: without them PostgreSQL's planner looks targets up through
            # uq_target, reading every row of the order per lookup (10k targets added to
            # an order of 20k took 15 s instead of 1 s). SQLite's planner needs none.
            session.execute(text("ANALYZE targets"))


def _at_text(value: datetime) -> str:
    return iso(value) or ""


def _entry(row: JournalRow) -> JournalEntry:
    return JournalEntry(
        row.seq, row.at, row.actor, row.action, row.payload, row.prev_hash, row.hash
    )


def _order_columns(order: OrderRecord) -> dict[str, Any]:
    return {
        "reference": order.reference, "authority": order.authority,
        "jurisdiction": order.jurisdiction, "issued_on": order.issued_on,
        "received_at": order.received_at, "effective_from": order.effective_from,
        "effective_until": order.effective_until, "requested_by": order.requested_by,
        "legal_basis": order.legal_basis, "notice": order.notice, "contact": order.contact,
        "appeal": order.appeal, "policy": order.policy, "status": order.status.value,
        "status_reason": order.status_reason,
    }


def _record(row: OrderRow) -> OrderRecord:
    return OrderRecord(
        reference=row.reference, authority=row.authority, issued_on=row.issued_on,
        received_at=to_utc(row.received_at), status=Status(row.status),
        jurisdiction=row.jurisdiction,
        effective_from=to_utc(row.effective_from) if row.effective_from else None,
        effective_until=to_utc(row.effective_until) if row.effective_until else None,
        requested_by=row.requested_by, legal_basis=row.legal_basis, notice=row.notice,
        contact=row.contact, appeal=row.appeal, policy=row.policy,
        status_reason=row.status_reason,
    )
