"""Plain values the store hands out and takes (no database types), shared by ``Store`` and
the quick commands' ``LiteStore``."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from blockd.core.model import OrderRecord, Target

R = TypeVar("R")
Rows = Iterator[tuple[str, str, str]]


@dataclass(frozen=True, slots=True)
class Forced:
    """Why the overblocking guard was overridden; recorded in the journal entry.

    ``targets`` are the targets the guard refused (``refusals`` says why, as text for the
    journal); they are stored with ``forced`` set, so the kernel may take them.
    """

    justification: str
    refusals: tuple[str, ...]
    targets: frozenset[Target] = frozenset()

    def payload(self) -> dict[str, Any]:
        return {"justification": self.justification, "refusals": list(self.refusals)}


@dataclass(frozen=True, slots=True)
class OrderSummary:
    order: OrderRecord
    targets: int


def by_order(orders: Mapping[int, R], rows: Iterable[Any],
             record: Callable[[R], OrderRecord]) -> Iterator[tuple[OrderRecord, Rows]]:
    """Every order with a stream of its (kind, value, match) rows, from target rows
    ``(order_id, kind, value, match)`` sorted by order id; orders without targets last.
    Each order's stream is valid only until the next order is taken."""
    seen: set[int] = set()
    for order_id, group in itertools.groupby(rows, key=operator.itemgetter(0)):
        seen.add(order_id)
        yield record(orders[order_id]), ((k, v, m) for _, k, v, m in group)
    for order_id, row in orders.items():
        if order_id not in seen:
            yield record(row), iter(())
