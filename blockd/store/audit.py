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
    """Problems found (empty = the journal is intact and the tables match it), read in
    one snapshot: a write committed meanwhile is in both or in neither."""
    with store.snapshot():
        return _verify(store)


def _verify(store: Store) -> list[str]:
    entries = store.journal()
    problems: list[str] = [str(f) for f in verify_chain(entries)]
    book = OrderBook()
    for e in entries:
        try:
            book.apply(e)
        except (BlockdError, KeyError, ValueError, TypeError) as exc:
            problems.append(str(ChainFault(e.seq, f"cannot be replayed: {exc}")))
            return problems
    # compared order by order as spec strings, streamed from the tables: a million
    # targets are never held as objects, nor twice (a daemon runs this in the background)
    seen: set[str] = set()
    for have, rows in store.load_rows():
        ref = have.reference
        seen.add(ref)
        if ref not in book.orders:
            problems.append(f"order {ref}: in the table but not in the journal")
            continue
        a, b = order_payload(have), order_payload(book.orders[ref])
        for key in sorted(a):
            if a[key] != b[key]:
                problems.append(
                    f"order {ref}: {key} is {a[key]!r} in the table, "
                    f"{b[key]!r} in the journal"
                )
        targets = {_spec(k, v, m) for k, v, m in rows}
        want = book.targets[ref]
        for spec in sorted(targets - want)[:5]:
            problems.append(f"order {ref}: target {spec} in the table, not in the journal")
        for spec in sorted(want - targets)[:5]:
            problems.append(f"order {ref}: target {spec} in the journal, not in the table")
    for ref in sorted(set(book.orders) - seen):
        problems.append(f"order {ref}: in the journal but missing from the table")
    problems.extend(_forced_problems(store, entries))
    return problems


def _spec(kind: str, value: str, match: str) -> str:
    """The canonical spec of a stored (kind, value, match) row (as Target.spec)."""
    if kind != "domain" or match == "subtree":
        return value
    return ("=" if match == "exact" else "*.") + value


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
