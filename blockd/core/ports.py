"""The small interfaces the adapters need from the rest of blockd (no I/O here).

The DNS service and the notice site take these instead of a store or a hit counter, so
they can be driven and tested without a database, and the daemon decides what sits
behind them (``store/hits.py``, ``store/store.py``).
"""

from __future__ import annotations

from typing import Protocol


class HitSink(Protocol):
    """Where a blocked answer or a notice served is counted (hot path: must not block).
    ``client`` (an address) only feeds a distinct-client estimate; it is never stored."""

    def add(self, reference: str, target: str, count: int = 1,
            client: str | None = None) -> None: ...


class PastBlocks(Protocol):
    """Was this host (name or address) named by an order, in force or not?

    Blocking: the notice site calls it in a worker thread and caches the answer per
    index snapshot. Raises ``BlockdError`` when the store cannot say.
    """

    def named_before(self, subject: str) -> bool: ...


class CnameResolver(Protocol):
    """A name's CNAME targets as the upstream resolvers answer them (None: no answer)."""

    async def chain(self, name: str) -> tuple[str, ...] | None: ...
