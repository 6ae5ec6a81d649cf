"""The store's tables (sqlmodel). Orders and targets are the journal's materialised state.

The journal is the record; ``orders`` and ``targets`` are kept in the same transaction as
each journal entry so reads are cheap, and ``blockd audit verify`` proves they match.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Column, DateTime, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

SCHEMA_VERSION = 2  # v2: targets.forced
TABLES = ("meta", "orders", "targets", "journal", "hits")


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
    """Blocked answers served, per order, target and UTC day (no client data here)."""

    __tablename__ = "hits"

    day: date = Field(primary_key=True)
    reference: str = Field(primary_key=True)
    target: str = Field(primary_key=True)
    count: int = 0
