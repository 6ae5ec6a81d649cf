"""Prove the record: the journal's hash chain is intact and the tables are its replay.

``blockd audit verify`` runs this. The chain check finds an edited, deleted or reordered
entry; the replay into an ``OrderBook`` compared with the ``orders`` and ``targets`` tables
finds a table edited behind the journal's back, including a target flagged as forced past
the overblocking guard that no journaled justification forced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blockd.core.journal import (
    ChainFault,
    JournalEntry,
    OrderBook,
    forced_specs,
    order_payload,
    verify_chain,
)
from blockd.core.model import BlockdError

if TYPE_CHECKING:
    from blockd.store.store import Store


def verify(store: Store) -> list[str]:
    """Problems found (empty = the journal is intact and the tables match it)."""
    entries = store.journal()
    problems: list[str] = [str(f) for f in verify_chain(entries)]
    book = OrderBook()
    for e in entries:
        try:
            book.apply(e)
        except (BlockdError, KeyError, ValueError, TypeError) as exc:
            problems.append(str(ChainFault(e.seq, f"cannot be replayed: {exc}")))
            return problems
    actual = {o.reference: (o, set(targets)) for o, targets in store.load_orders()}
    expected = {o.reference: o for o in book.records()}
    for ref in sorted(set(actual) | set(expected)):
        if ref not in expected:
            problems.append(f"order {ref}: in the table but not in the journal")
            continue
        if ref not in actual:
            problems.append(f"order {ref}: in the journal but missing from the table")
            continue
        have, targets = actual[ref]
        want = expected[ref]
        a, b = order_payload(have), order_payload(want)
        for key in sorted(a):
            if a[key] != b[key]:
                problems.append(
                    f"order {ref}: {key} is {a[key]!r} in the table, "
                    f"{b[key]!r} in the journal"
                )
        extra = targets - want.targets
        lost = want.targets - targets
        for t in sorted(extra)[:5]:
            problems.append(f"order {ref}: target {t.spec} in the table, not in the journal")
        for t in sorted(lost)[:5]:
            problems.append(f"order {ref}: target {t.spec} in the journal, not in the table")
    problems.extend(_forced_problems(store, entries))
    return problems


def _forcing(entries: list[JournalEntry]) -> dict[int, tuple[str | None, set[str]]]:
    """seq -> (order reference, specs the entry's guard override names)."""
    out: dict[int, tuple[str | None, set[str]]] = {}
    for e in entries:
        if '"forced":' not in e.payload:
            continue
        out[e.seq] = forced_specs(e.data)
    return out


def _forced_problems(store: Store, entries: list[JournalEntry]) -> list[str]:
    """A target is forced exactly when the entry that added it forced it by name."""
    forcing = _forcing(entries)
    problems = []
    for ref, spec, added_seq, flagged in store.forced_flags():
        by, specs = forcing.get(added_seq, (None, set()))
        journaled = by == ref and spec in specs
        if flagged and not journaled:
            problems.append(f"order {ref}: target {spec} is marked forced past the guard, "
                            "but no journal entry forced it")
        elif journaled and not flagged:
            problems.append(f"order {ref}: target {spec} was forced in journal entry "
                            f"{added_seq}, but the table does not say so")
    return problems[:20]
