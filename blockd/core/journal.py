"""The order journal: hash-chained change entries, and the state they replay into.

Every change to orders and targets is one entry. The entry hash covers its header and its
payload text and the previous entry's hash, so editing, reordering or deleting an entry in
the middle breaks the chain. Daemons follow the journal by sequence number and apply
entries to an :class:`OrderBook`; RPZ serials will be these sequence numbers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from blockd.core.model import BlockdError, OrderRecord, Status, Target
from blockd.core.names import target_from_spec
from blockd.core.timeparse import iso

GENESIS = "0" * 64

ORDER_ADD = "order.add"
TARGET_ADD = "target.add"
TARGET_REMOVE = "target.remove"
ORDER_STATUS = "order.status"
# An operator adopted this store although it does not continue what daemons enforced
# (a restored backup, a fresh store): the payload names the heads it replaces.
STORE_ADOPT = "store.adopt"
# hit buckets past their policy's retention were deleted: how many, and which days
HITS_PRUNE = "hits.prune"
# an order's facts changed (extended past its end, the authority's text corrected...):
# the payload holds the new values and the previous ones, and why
ORDER_AMEND = "order.amend"
ACTIONS = (ORDER_ADD, TARGET_ADD, TARGET_REMOVE, ORDER_STATUS, STORE_ADOPT, HITS_PRUNE,
           ORDER_AMEND)
# the order fields `order amend` may change (never the reference, the dates it was
# issued and received, or the policy that decides how it is enforced)
AMENDABLE = ("authority", "jurisdiction", "requested_by", "legal_basis", "notice",
             "contact", "appeal", "effective_until")

# Targets per journal entry: a 1M-target import becomes many entries of bounded size, so
# followers apply it in steps and no single payload is huge.
TARGETS_PER_ENTRY = 10_000


class JournalError(BlockdError):
    """An entry that cannot be applied (unknown order, bad payload)."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    seq: int
    at: str
    actor: str
    action: str
    payload: str
    prev_hash: str
    hash: str

    @property
    def data(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.payload)
        return value


def canonical(payload: Mapping[str, Any]) -> str:
    """The one text form of a payload: what is stored and what is hashed."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(seq: int, at: str, actor: str, action: str, payload: str, prev_hash: str) -> str:
    header = json.dumps([seq, at, actor, action, prev_hash], ensure_ascii=False)
    return hashlib.sha256((header + "\n" + payload).encode("utf-8")).hexdigest()


def make_entry(
    prev: JournalEntry | None, at: datetime, actor: str, action: str, payload: Mapping[str, Any]
) -> JournalEntry:
    """The entry that follows ``prev`` (or starts the chain)."""
    if action not in ACTIONS:
        raise JournalError(f"unknown journal action {action!r}")
    seq = 1 if prev is None else prev.seq + 1
    prev_hash = GENESIS if prev is None else prev.hash
    at_text = iso(at) or ""
    text = canonical(payload)
    return JournalEntry(
        seq, at_text, actor, action, text, prev_hash,
        entry_hash(seq, at_text, actor, action, text, prev_hash),
    )


@dataclass(frozen=True, slots=True)
class ChainFault:
    seq: int
    problem: str

    def __str__(self) -> str:
        return f"entry {self.seq}: {self.problem}"


def verify_chain(entries: Iterable[JournalEntry]) -> list[ChainFault]:
    """Every place where the chain does not hold (empty when the history is intact)."""
    faults: list[ChainFault] = []
    prev_seq, prev_hash = 0, GENESIS
    for e in entries:
        if e.seq != prev_seq + 1:
            faults.append(ChainFault(e.seq, f"sequence gap (expected {prev_seq + 1})"))
        if e.prev_hash != prev_hash:
            faults.append(ChainFault(e.seq, "does not link to the previous entry"))
        if entry_hash(e.seq, e.at, e.actor, e.action, e.payload, e.prev_hash) != e.hash:
            faults.append(ChainFault(e.seq, "content does not match its hash (edited)"))
        prev_seq, prev_hash = e.seq, e.hash
    return faults


# -- payloads -------------------------------------------------------------------------

_ORDER_FIELDS = (
    "reference", "authority", "jurisdiction", "requested_by", "legal_basis", "notice",
    "contact", "appeal", "policy", "status_reason",
)


def order_payload(order: OrderRecord) -> dict[str, Any]:
    """An order's facts (without targets) as JSON-able data."""
    data: dict[str, Any] = {f: getattr(order, f) for f in _ORDER_FIELDS}
    data["status"] = order.status.value
    data["issued_on"] = iso(order.issued_on)
    data["received_at"] = iso(order.received_at)
    data["effective_from"] = iso(order.effective_from)
    data["effective_until"] = iso(order.effective_until)
    return data


def order_from_payload(data: Mapping[str, Any]) -> OrderRecord:
    from datetime import date

    def instant(key: str) -> datetime | None:
        value = data.get(key)
        return None if value is None else datetime.fromisoformat(value)

    received = instant("received_at")
    if received is None:
        raise JournalError("order payload lacks received_at")
    return OrderRecord(
        reference=data["reference"],
        authority=data["authority"],
        issued_on=date.fromisoformat(data["issued_on"]),
        received_at=received,
        status=Status(data.get("status", "active")),
        effective_from=instant("effective_from"),
        effective_until=instant("effective_until"),
        jurisdiction=data.get("jurisdiction"),
        requested_by=data.get("requested_by"),
        legal_basis=data.get("legal_basis"),
        notice=data.get("notice"),
        contact=data.get("contact"),
        appeal=data.get("appeal"),
        policy=data.get("policy") or "default",
        status_reason=data.get("status_reason"),
    )


def amended(order: OrderRecord, changes: Mapping[str, Any]) -> OrderRecord:
    """The order with an ``order.amend`` entry's changes (JSON values, as journaled)."""
    values: dict[str, Any] = {}
    for key, value in changes.items():
        if key not in AMENDABLE:
            raise JournalError(f"{key!r} cannot be amended")
        values[key] = datetime.fromisoformat(value) if key == "effective_until" and \
            value is not None else value
    return replace(order, **values)


def amend_payload(order: OrderRecord, changes: Mapping[str, Any], reason: str
                  ) -> dict[str, Any]:
    """The ``order.amend`` payload: new and previous values, JSON-able, and why."""
    def plain(key: str, value: Any) -> Any:
        return iso(value) if key == "effective_until" else value
    return {"reference": order.reference,
            "changes": {k: plain(k, v) for k, v in changes.items()},
            "previous": {k: plain(k, getattr(order, k)) for k in changes},
            "reason": reason}


def chunks(targets: list[Target]) -> Iterator[list[str]]:
    for i in range(0, len(targets), TARGETS_PER_ENTRY):
        yield [t.spec for t in targets[i : i + TARGETS_PER_ENTRY]]


def target_add_payloads(reference: str, added: list[Target],
                        forced: Mapping[str, Any] | None = None,
                        collateral: Iterable[str] = ()) -> Iterator[dict[str, Any]]:
    """The payloads of the ``target.add`` entries that add ``added`` to an order: one
    per TARGETS_PER_ENTRY, the first carrying the guard override (``forced``) and the
    collateral warnings."""
    extra: dict[str, Any] = {}
    if forced is not None:
        extra["forced"] = forced
    if collateral := list(collateral):
        extra["collateral"] = collateral
    for batch in chunks(added):
        yield {"reference": reference, "targets": batch, **extra}
        extra = {}


# -- replay ---------------------------------------------------------------------------


class OrderBook:
    """All orders and their targets, as the journal says they are.

    Built by replaying entries; used to follow the journal incrementally and to prove that
    the store's tables match their history. Targets are kept as canonical spec strings,
    which costs far less memory than objects when an order has a million of them.
    """

    def __init__(self) -> None:
        self.orders: dict[str, OrderRecord] = {}
        self.targets: dict[str, set[str]] = {}
        self.seq = 0

    def add_order(self, order: OrderRecord, targets: Iterable[Target]) -> None:
        """Load an order directly (a snapshot from the store instead of a replay)."""
        self.orders[order.reference] = order
        self.targets[order.reference] = {t.spec for t in targets}

    def apply(self, entry: JournalEntry) -> tuple[str, str, list[Target]]:
        """Apply one entry; return (action, reference, targets touched) for followers."""
        data = entry.data
        action = entry.action
        if action == ORDER_ADD:
            order = order_from_payload(data["order"])
            if order.reference in self.orders:
                raise JournalError(f"entry {entry.seq}: order {order.reference} exists")
            self.orders[order.reference] = order
            self.targets[order.reference] = set()
            touched = [target_from_spec(s) for s in data.get("targets", [])]
            self.targets[order.reference].update(t.spec for t in touched)
            ref = order.reference
        elif action in (TARGET_ADD, TARGET_REMOVE):
            ref = data["reference"]
            current = self._targets_of(ref, entry.seq)
            touched = [target_from_spec(s) for s in data["targets"]]
            if action == TARGET_ADD:
                current.update(t.spec for t in touched)
            else:
                current.difference_update(t.spec for t in touched)
        elif action == ORDER_STATUS:
            ref = data["reference"]
            self._targets_of(ref, entry.seq)
            self.orders[ref] = replace(
                self.orders[ref], status=Status(data["status"]), status_reason=data["reason"]
            )
            touched = []
        elif action == ORDER_AMEND:
            ref = data["reference"]
            self._targets_of(ref, entry.seq)
            self.orders[ref] = amended(self.orders[ref], data["changes"])
            touched = []
        elif action in (STORE_ADOPT, HITS_PRUNE):
            ref, touched = "", []  # changes no order
        else:
            raise JournalError(f"entry {entry.seq}: unknown action {action!r}")
        self.seq = entry.seq
        return action, ref, touched

    def _targets_of(self, ref: str, seq: int) -> set[str]:
        try:
            return self.targets[ref]
        except KeyError:
            raise JournalError(f"entry {seq}: unknown order {ref}") from None

    def records(self) -> list[OrderRecord]:
        """Orders with their targets attached."""
        return [
            replace(o, targets=frozenset(target_from_spec(s) for s in self.targets[ref]))
            for ref, o in self.orders.items()
        ]


def adopted_heads(payload: Mapping[str, Any]) -> set[tuple[int, str]]:
    """The (seq, hash) journal heads a ``store.adopt`` entry replaces."""
    heads = set()
    for item in payload.get("replaces", []):
        if isinstance(item, dict) and isinstance(item.get("seq"), int) \
                and isinstance(item.get("hash"), str):
            heads.add((item["seq"], item["hash"]))
    return heads


def forced_specs(payload: Mapping[str, Any]) -> tuple[str | None, set[str]]:
    """(order reference, specs of the targets the entry forced past the guard). Each
    refusal reads "SPEC: reason"; the specs are what the override names."""
    forced = payload.get("forced") or {}
    reference = payload.get("reference") or (payload.get("order") or {}).get("reference")
    return reference, {r.split(": ", 1)[0] for r in forced.get("refusals", [])}
