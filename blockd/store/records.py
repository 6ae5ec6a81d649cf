"""Plain values the store hands out and takes (no database types), shared by ``Store`` and
the quick commands' ``LiteStore``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blockd.core.model import OrderRecord, Target


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
