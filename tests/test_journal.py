"""The hash chain: any edit, reorder or deletion in the middle is detected."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from blockd.core.journal import (
    ORDER_STATUS,
    JournalEntry,
    make_entry,
    verify_chain,
)

T = datetime(2026, 1, 1, tzinfo=UTC)


def chain(n: int) -> list[JournalEntry]:
    out: list[JournalEntry] = []
    for i in range(n):
        out.append(make_entry(out[-1] if out else None, T, "alice", ORDER_STATUS,
                              {"reference": f"R{i}", "status": "active", "reason": "x"}))
    return out


def test_intact_chain_verifies() -> None:
    assert verify_chain(chain(5)) == []


@given(st.integers(0, 4), st.sampled_from(["payload", "actor", "at", "action"]))
def test_any_edit_is_detected(i: int, field: str) -> None:
    entries = chain(5)
    value = getattr(entries[i], field)
    entries[i] = replace(entries[i], **{field: value + " "})
    faults = verify_chain(entries)
    assert faults and faults[0].seq == entries[i].seq


def test_deletion_and_reorder_are_detected() -> None:
    entries = chain(5)
    assert verify_chain(entries[:2] + entries[3:])
    assert verify_chain([entries[1], entries[0], *entries[2:]])


def test_rehashing_one_entry_still_breaks_the_link() -> None:
    """An attacker who recomputes the edited entry's hash breaks the next entry's link."""
    entries = chain(3)
    forged = make_entry(entries[0], T, "mallory", ORDER_STATUS,
                        {"reference": "R1", "status": "lifted", "reason": "x"})
    entries[1] = forged
    faults = verify_chain(entries)
    assert [f.seq for f in faults] == [3]
