"""The SQL behind hits: three levels of buckets, written together, read at the coarsest
level a question allows.

- ``hits``: per (order, UTC day, target, channel), with a client sketch;
- ``hit_orders``: per (order, day, channel), the same summed over targets, with a sketch;
- ``hit_months``: per (order, month, channel), counts only, so a year of thousands of
  orders is a few hundred thousand rows to sum, not millions. A question over whole
  months reads these; the days at either end of its range come from ``hit_orders``;
- ``hit_days``: per (day, channel) over all orders, for the questions by day.

All three are kept in the transaction that adds a batch (and the one that prunes), so
they always agree; ``blockd audit verify`` does not cover them (hits are not journaled).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from blockd.core.hits import GroupRow, HitBucket, HitQuery
from blockd.core.sketch import Sketch, merge_stored

if TYPE_CHECKING:  # the reads run on any connection (`order show` reads without SQLAlchemy)
    from sqlmodel import Session

# how the reads run a query: (SQL with :named parameters, parameters) -> rows
Run = Callable[[str, Mapping[str, Any]], Iterable[Sequence[Any]]]


def session_runner(session: Session) -> Run:
    """The reads on a SQLAlchemy session."""
    from sqlalchemy import text

    def run(sql: str, params: Mapping[str, Any]) -> Iterable[Sequence[Any]]:
        return session.execute(text(sql), params)
    return run

BATCH = 500
DAY_TEXT = "CAST(day AS TEXT)"  # a DATE column is text in SQLite, a date in PostgreSQL
_GROUP_KEYS = {"order": "reference", "target": "reference || ' ' || target", "day": "day",
               "channel": "channel"}


def add(session: Session, buckets: Sequence[HitBucket]) -> None:
    """Add a batch: counts add up, sketches merge, month totals follow."""
    from sqlalchemy import text

    counts: dict[tuple[str, date, str], int] = {}
    sketches: dict[tuple[str, date, str], Sketch] = {}
    for b in buckets:  # the per-order rollup: counts summed, sketches merged once each
        key = (b.reference, b.day, b.channel)
        counts[key] = counts.get(key, 0) + b.count
        if b.clients is not None:
            sketch = sketches.get(key)
            if sketch is None:
                sketch = sketches[key] = Sketch()
            sketch.merge_bytes(b.clients)
    orders = {key: HitBucket(key[1], key[0], "", key[2], count,
                             sketches[key].encode() if key in sketches else None)
              for key, count in counts.items()}
    months: dict[tuple[str, str, str], list[Any]] = {}
    days: dict[tuple[str, str], list[int]] = {}
    known = _stored(session, "hit_orders", ("reference", "day", "channel"),
                    [(ref, day.isoformat(), channel) for ref, day, channel in orders])
    for (ref, day, channel), b in orders.items():
        new = (ref, day.isoformat(), channel) not in known
        row = months.setdefault((ref, day.isoformat()[:7], channel), [0, day, day, 0])
        row[0] += b.count
        row[1], row[2] = min(row[1], day), max(row[2], day)
        row[3] += int(new)
        total = days.setdefault((day.isoformat(), channel), [0, 0])
        total[0] += b.count
        total[1] += int(new)
    _upsert(session, "hits", ("reference", "day", "target", "channel"), buckets)
    _upsert(session, "hit_orders", ("reference", "day", "channel"), list(orders.values()))
    # the smaller/larger of two values: SQLite's scalar MIN/MAX, SQL's LEAST/GREATEST
    least, greatest = (("MIN", "MAX") if session.get_bind().dialect.name == "sqlite"
                       else ("LEAST", "GREATEST"))
    session.execute(text(
        "INSERT INTO hit_months (reference, month, channel, count, first_day, last_day, "
        "buckets) VALUES (:r, :m, :c, :n, :f, :l, :b) ON CONFLICT (reference, month, channel) "
        "DO UPDATE SET count = hit_months.count + excluded.count, "
        f"first_day = {least}(hit_months.first_day, excluded.first_day), "
        f"last_day = {greatest}(hit_months.last_day, excluded.last_day), "
        "buckets = hit_months.buckets + excluded.buckets"),
        [{"r": r, "m": m, "c": c, "n": n, "f": f.isoformat(), "l": last.isoformat(), "b": nb}
         for (r, m, c), (n, f, last, nb) in months.items()])
    session.execute(text(
        "INSERT INTO hit_days (day, channel, count, buckets) VALUES (:d, :c, :n, :b) "
        "ON CONFLICT (day, channel) DO UPDATE SET count = hit_days.count + excluded.count, "
        "buckets = hit_days.buckets + excluded.buckets"),
        [{"d": d, "c": c, "n": n, "b": nb} for (d, c), (n, nb) in days.items()])


def merged(a: bytes | None, b: bytes | None) -> bytes | None:
    if a is None or b is None:
        return a if b is None else b
    return merge_stored(a, b)


def _stored(session: Session, table: str, key: tuple[str, ...],
            wanted: Sequence[tuple[str, ...]]) -> dict[tuple[str, ...], bytes | None]:
    """The rows of ``table`` among ``wanted`` keys, with their stored sketch: keys that
    differ in their last column only share one indexed query (a flush of 100,000 new
    buckets was 100,000 queries). Sent to the driver as they are: SQLAlchemy's parsing of
    a 500-parameter ``text()`` was a third of a flush."""
    found: dict[tuple[str, ...], bytes | None] = {}
    groups: dict[tuple[str, ...], list[str]] = {}
    spread = "target" if "target" in key else "reference"
    fixed = tuple(c for c in key if c != spread)
    for row in wanted:
        parts = dict(zip(key, row, strict=True))
        groups.setdefault(tuple(parts[c] for c in fixed), []).append(parts[spread])
    mark = "?" if session.get_bind().dialect.paramstyle == "qmark" else "%s"
    where = " AND ".join(f"{c} = {mark}" for c in fixed)
    connection = session.connection()
    for prefix, values in groups.items():
        for start in range(0, len(values), BATCH):
            chunk = values[start:start + BATCH]
            marks = ", ".join([mark] * len(chunk))
            for value, clients in connection.exec_driver_sql(
                    f"SELECT {spread}, clients FROM {table} WHERE {where} AND "
                    f"{spread} IN ({marks})", (*prefix, *chunk)):
                parts = dict(zip(fixed, prefix, strict=True))
                parts[spread] = str(value)
                found[tuple(parts[c] for c in key)] = clients
    return found


def _upsert(session: Session, table: str, key: tuple[str, ...],
            buckets: Sequence[HitBucket]) -> None:
    """Add counts to existing rows and merge sketches; insert the rest. Rows go to the
    driver's executemany as tuples: SQLAlchemy's per-row parameter handling was most of
    the cost of a flush of 100,000 buckets."""
    columns = ", ".join(key)
    mark = "?" if session.get_bind().dialect.paramstyle == "qmark" else "%s"
    sql = (f"INSERT INTO {table} ({columns}, count, clients) "
           f"VALUES ({', '.join([mark] * (len(key) + 2))}) "
           f"ON CONFLICT ({columns}) DO UPDATE SET count = {table}.count + excluded.count, "
           f"clients = COALESCE(excluded.clients, {table}.clients)")
    for start in range(0, len(buckets), BATCH * 10):
        chunk = buckets[start:start + BATCH * 10]
        keys = [tuple(_column(b, c) for c in key) for b in chunk]
        stored = _stored(session, table, key,
                         [k for k, b in zip(keys, chunk, strict=True) if b.clients is not None])
        rows = [(*k, b.count, b.clients if b.clients is None or k not in stored
                 else merged(stored[k], b.clients))
                for k, b in zip(keys, chunk, strict=True)]
        session.connection().exec_driver_sql(sql, rows)


def _column(bucket: HitBucket, column: str) -> str:
    if column == "day":
        return bucket.day.isoformat()
    return bucket.reference if column == "reference" else \
        bucket.target if column == "target" else bucket.channel


# -- reading -----------------------------------------------------------------------------


def _filter(query: HitQuery, table: str, since: date | None, until: date | None,
            column: str = "day", tag: str = "") -> tuple[str, dict[str, Any]]:
    where, params = [], {}
    for name, value in (("reference", query.reference), ("target", query.target),
                        ("channel", query.channel)):
        if value is not None:
            where.append(f"{name} = :{name}")
            params[name] = value
    if since is not None:
        where.append(f"{column} >= :since{tag}")
        params[f"since{tag}"] = since.isoformat()[:7] if column == "month" else since.isoformat()
    if until is not None:
        where.append(f"{column} <= :until{tag}")
        params[f"until{tag}"] = until.isoformat()[:7] if column == "month" else until.isoformat()
    return (" WHERE " + " AND ".join(where) if where else ""), params


def table_for(query: HitQuery) -> str:
    return "hits" if query.target is not None or query.by == "target" else "hit_orders"


Days = tuple[date, date]


def _months(since: date | None, until: date | None
            ) -> tuple[tuple[date | None, date | None] | None, Days | None, Days | None]:
    """Split [since, until] into (whole months, leading days, trailing days)."""
    first_whole = since
    if since is not None and since.day != 1:
        first_whole = (since.replace(day=28) + timedelta(days=4)).replace(day=1)
    last_whole = until
    if until is not None and (until + timedelta(days=1)).day != 1:
        last_whole = until.replace(day=1) - timedelta(days=1)
    if first_whole is not None and last_whole is not None and first_whole > last_whole:
        assert since is not None and until is not None
        return None, (since, until), None  # within one month (or two partial ones)
    head: Days | None = None
    if since is not None and first_whole is not None and first_whole != since:
        head = (since, first_whole - timedelta(days=1))
    tail: Days | None = None
    if until is not None and last_whole is not None and last_whole != until:
        tail = (last_whole + timedelta(days=1), until)
    return (first_whole, last_whole), head, tail


def groups(run: Run, query: HitQuery, top: int | None) -> list[GroupRow]:
    """(key, hits, first day, last day, buckets, buckets that may hold a sketch), busiest
    first (by day: in date order), summed by the database."""
    key = _GROUP_KEYS[query.by]
    order = "key" if query.by == "day" else "hits DESC, key"
    limit = f" LIMIT {int(top)}" if top is not None else ""
    table = table_for(query)
    if table == "hit_orders" and query.by != "day":
        whole, head, tail = _months(query.since, query.until)
        parts, params = [], {}
        if whole is not None:
            where, p = _filter(query, "hit_months", whole[0], whole[1], "month", "m")
            parts.append(f"SELECT {key} AS key, count, first_day AS lo, last_day AS hi, "
                         f"buckets FROM hit_months{where}")
            params.update(p)
        for tag, days in (("h", head), ("t", tail)):
            if days is not None:
                where, p = _filter(query, "hit_orders", days[0], days[1], "day", tag)
                parts.append(f"SELECT {key} AS key, count, {DAY_TEXT} AS lo, {DAY_TEXT} AS "
                             f"hi, 1 AS buckets FROM hit_orders{where}")
                params.update(p)
        sql = (f"SELECT key, SUM(count) AS hits, MIN(lo), MAX(hi), SUM(buckets) FROM "
               f"({' UNION ALL '.join(parts)}) AS parts GROUP BY key ORDER BY {order}{limit}")
    elif table == "hit_orders" and query.reference is None:  # by day, all orders
        where, params = _filter(query, "hit_days", query.since, query.until)
        sql = (f"SELECT day AS key, SUM(count) AS hits, day, day, SUM(buckets) "
               f"FROM hit_days{where} GROUP BY key ORDER BY {order}{limit}")
    else:
        where, params = _filter(query, table, query.since, query.until)
        sql = (f"SELECT {key} AS key, SUM(count) AS hits, MIN(day), MAX(day), COUNT(*) "
               f"FROM {table}{where} GROUP BY key ORDER BY {order}{limit}")
    return [(str(k), int(n), _day(lo), _day(hi), int(b), int(b))
            for k, n, lo, hi, b in run(sql, params)]


def sketches(run: Run, query: HitQuery, keys: Sequence[str] | None
             ) -> Iterator[tuple[str, bytes]]:
    """(group key, stored sketch) of the daily buckets matching ``query``; only of the
    groups ``keys`` if given (the rows --top kept)."""
    table = table_for(query)
    where, params = _filter(query, table, query.since, query.until)
    where += (" AND" if where else " WHERE") + " clients IS NOT NULL"
    if keys is not None:  # narrowed by an indexed column; the key itself is checked below
        column = {"order": "reference", "target": "reference", "day": "day",
                  "channel": "channel"}[query.by]
        values = sorted({k.split(" ", 1)[0] for k in keys} if query.by == "target"
                        else set(keys))
        marks = ", ".join(f":k{i}" for i in range(len(values))) or "NULL"
        where += f" AND {column} IN ({marks})"
        params.update({f"k{i}": v for i, v in enumerate(values)})
    wanted = set(keys) if keys is not None else None
    for key, sketch in run(f"SELECT {_GROUP_KEYS[query.by]}, clients FROM {table}{where}",
                           params):
        if wanted is None or str(key) in wanted:
            yield str(key), bytes(sketch)


def buckets(run: Run, query: HitQuery) -> Iterator[HitBucket]:
    """Stored daily buckets matching ``query`` (target "" from the per-order table)."""
    table = table_for(query)
    where, params = _filter(query, table, query.since, query.until)
    target = "target" if table == "hits" else "''"
    clients = "clients" if query.clients else "NULL"
    for ref, day, tgt, channel, count, sketch in run(
            f"SELECT reference, day, {target}, channel, count, {clients} FROM {table}{where}",
            params):
        yield HitBucket(_day(day), ref, tgt, channel, count, sketch)


def _day(value: object) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


# -- retention ---------------------------------------------------------------------------


def prune(session: Session, cutoffs: Mapping[str, date], default: date
          ) -> tuple[int, str | None, str | None]:
    """Delete buckets older than each order's policy keeps them; (target buckets deleted,
    first day, last day). The month a cutoff falls in is summed again from what is kept."""
    from sqlalchemy import text

    groups_: list[tuple[str, dict[str, Any], date]] = [
        ("reference IN (SELECT reference FROM orders WHERE policy = :p)", {"p": name}, cutoff)
        for name, cutoff in cutoffs.items()]
    marks = ", ".join(f":p{i}" for i in range(len(cutoffs))) or "''"
    groups_.append((f"reference NOT IN (SELECT reference FROM orders WHERE policy IN "
                    f"({marks}))", {f"p{i}": name for i, name in enumerate(cutoffs)}, default))
    deleted, first, last = 0, None, None
    for refs, params, cutoff in groups_:
        params = {**params, "d": cutoff.isoformat(), "m": cutoff.isoformat()[:7]}
        low, high, n = session.execute(text(
            f"SELECT MIN(day), MAX(day), COUNT(*) FROM hits WHERE {refs} AND day < :d"),
            params).one()
        if not n and not session.execute(text(
                f"SELECT 1 FROM hit_orders WHERE {refs} AND day < :d LIMIT 1"), params).first():
            continue
        if n:
            deleted += n
            first = str(low) if first is None else min(first, str(low))
            last = str(high) if last is None else max(last, str(high))
        for table in ("hits", "hit_orders"):
            session.execute(text(f"DELETE FROM {table} WHERE {refs} AND day < :d"), params)
        session.execute(text(f"DELETE FROM hit_months WHERE {refs} AND month <= :m"), params)
        session.execute(text(
            # :m typed once: PostgreSQL refuses a parameter read as varchar and as text
            "INSERT INTO hit_months (reference, month, channel, count, first_day, last_day, "
            "buckets) SELECT reference, CAST(:m AS TEXT), channel, SUM(count), MIN(day), "
            f"MAX(day), COUNT(*) FROM hit_orders WHERE {refs} AND day >= :d "
            f"AND substr({DAY_TEXT}, 1, 7) = :m GROUP BY reference, channel"), params)
    if deleted:  # the days before the latest cutoff, summed again from what is kept
        latest = max(cutoff for _, _, cutoff in groups_).isoformat()
        session.execute(text("DELETE FROM hit_days WHERE day < :d"), {"d": latest})
        session.execute(text(
            "INSERT INTO hit_days (day, channel, count, buckets) SELECT day, channel, "
            "SUM(count), COUNT(*) FROM hit_orders WHERE day < :d GROUP BY day, channel"),
            {"d": latest})
    return deleted, first, last
