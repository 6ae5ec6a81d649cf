"""The store's tables (sqlmodel). Orders and targets are the journal's materialised state.

The journal is the record; ``orders`` and ``targets`` are kept in the same transaction as
each journal entry so reads are cheap, and ``blockd audit verify`` proves they match.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Column, DateTime, Index, LargeBinary, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

# v2: targets.forced; v3: hits per channel with sketches, timeline, verify runs (the number
# lives in engine.py, which the quick commands load without SQLAlchemy)
from blockd.store.engine import SCHEMA_VERSION as SCHEMA_VERSION

TABLES = ("meta", "orders", "targets", "journal", "hits", "hit_orders", "hit_months",
          "hit_days", "enforcements", "verify_runs")


class Meta(SQLModel, table=True):
    __tablename__ = "meta"

    key: str = Field(primary_key=True)
    value: str


class OrderRow(SQLModel, table=True):
    __tablename__ = "orders"

    id: int | None = Field(default=None, primary_key=True)
    reference: str = Field(unique=True, index=True)
    authority: str
    jurisdiction: str | None = None
    issued_on: date
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    effective_from: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    effective_until: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    requested_by: str | None = None
    legal_basis: str | None = None
    notice: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    contact: str | None = None
    appeal: str | None = None
    policy: str = "default"
    status: str = Field(default="active", index=True)
    status_reason: str | None = None
    created_seq: int
    updated_seq: int


class TargetRow(SQLModel, table=True):
    __tablename__ = "targets"
    __table_args__ = (
        UniqueConstraint("order_id", "kind", "value", "match", name="uq_target"),
        Index("ix_targets_value", "value"),
    )

    id: int | None = Field(default=None, primary_key=True)
    order_id: int = Field(foreign_key="orders.id", index=True)
    kind: str
    value: str
    match: str = "subtree"
    added_seq: int
    # True when the guard refused this target and the command that added it (the journal
    # entry at added_seq) forced it with a justification: the kernel may then take it
    forced: bool = Field(default=False, index=True,
                         sa_column_kwargs={"server_default": text("false")})


class JournalRow(SQLModel, table=True):
    __tablename__ = "journal"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    at: str = Field(index=True)
    actor: str
    action: str
    payload: str = Field(sa_column=Column(Text, nullable=False))
    prev_hash: str
    hash: str


class HitRow(SQLModel, table=True):
    """Blocked answers and notices served per order, target, channel and UTC day.

    ``clients`` is a HyperLogLog sketch (``core/sketch.py``) of keyed hashes whose key
    never leaves the daemon's memory: an estimate of distinct clients, never an address.
    """

    __tablename__ = "hits"
    __table_args__ = (Index("ix_hits_target", "target", "day"), Index("ix_hits_day", "day"))

    reference: str = Field(primary_key=True)
    day: date = Field(primary_key=True)
    target: str = Field(primary_key=True)
    channel: str = Field(primary_key=True)
    count: int = 0
    clients: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class HitOrderRow(SQLModel, table=True):
    """The same per order (all its targets): what most questions ask, kept small enough
    to answer over a year of thousands of orders at once."""

    __tablename__ = "hit_orders"
    # covering: a question by day sums counts without reading the rows (and their sketches)
    __table_args__ = (Index("ix_hit_orders_day", "day", "reference", "channel", "count"),)

    reference: str = Field(primary_key=True)
    day: date = Field(primary_key=True)
    channel: str = Field(primary_key=True)
    count: int = 0
    clients: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class HitMonthRow(SQLModel, table=True):
    """Per order, month (YYYY-MM) and channel: the sum of ``hit_orders`` (no sketch), so
    a year of thousands of orders is summed from a few hundred thousand rows."""

    __tablename__ = "hit_months"

    reference: str = Field(primary_key=True)
    month: str = Field(primary_key=True)
    channel: str = Field(primary_key=True)
    count: int = 0
    first_day: str
    last_day: str
    buckets: int = 0  # daily rows summed here


class HitDayRow(SQLModel, table=True):
    """Per UTC day and channel over all orders: the questions by day, without reading
    every order's row of every day."""

    __tablename__ = "hit_days"

    day: str = Field(primary_key=True)
    channel: str = Field(primary_key=True)
    count: int = 0
    buckets: int = 0  # per-order daily rows summed here


class EnforcementRow(SQLModel, table=True):
    """When each daemon instance first enforced a journal entry (the proof of timeliness).

    One row per (entry, channel, instance), inserted once: a restart that applies the
    entry again keeps the first time.
    """

    __tablename__ = "enforcements"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    channel: str = Field(primary_key=True)
    instance: str = Field(primary_key=True)
    at: str


class VerifyRunRow(SQLModel, table=True):
    """One `blockd verify` run: what it checked against which journal head, and how it
    went (per order, so a report can cite the last run that covered its order)."""

    __tablename__ = "verify_runs"

    id: int | None = Field(default=None, primary_key=True)
    at: str = Field(index=True)
    head_seq: int
    head_hash: str | None = None
    checked: int
    failed: int
    sampled: bool
    # {"orders": {ref: [passed, failed]}, "failures": [first 50 as dicts]}
    result: str = Field(sa_column=Column(Text, nullable=False))
