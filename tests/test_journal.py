"""The hash chain: any edit, reorder or deletion in the middle is detected; with an
anchor recorded elsewhere (`blockd audit anchor`), so are deletions from the end and a
history rewritten with every later hash recomputed."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import db_execute
from hypothesis import given
from hypothesis import strategies as st

from blockd.core.journal import (
    GENESIS,
    ORDER_STATUS,
    JournalEntry,
    entry_hash,
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


# -- anchors: what one database cannot prove about itself -------------------------------

def _anchored(blockd: Any, db: Path) -> str:
    assert blockd("init").code == 0
    assert blockd("order", "add", "A-1", "--authority", "Court", "--issued", "2020-01-01",
                  "a.example").code == 0
    assert blockd("order", "target", "add", "A-1", "b.example").code == 0
    r = blockd("audit", "anchor")
    assert r.code == 0
    anchor = r.out.strip()
    head = json.loads(blockd("audit", "verify", "--json").out)
    assert anchor == f"2:{head['head_hash']}"
    assert blockd("audit", "verify", "--anchor", anchor).code == 0
    return anchor


def test_an_anchor_catches_entries_deleted_from_the_end(
        blockd: Any, store_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKD_DB", store_db)  # SQLite, then PostgreSQL
    anchor = _anchored(blockd, Path(store_db))
    # the newest entry and its effect, both removed
    db_execute(store_db, "DELETE FROM journal WHERE seq = 2",
               "DELETE FROM targets WHERE value = 'b.example'",
               "UPDATE orders SET updated_seq = 1")
    assert blockd("audit", "verify").code == 0  # consistent in itself: undetectable alone
    r = blockd("audit", "verify", "--anchor", anchor)
    assert r.code == 1
    assert "anchor 2: the journal no longer has entry 2" in r.out


def test_an_anchor_catches_a_rewritten_history(blockd: Any, db: Path) -> None:
    anchor = _anchored(blockd, db)
    con = sqlite3.connect(db)  # entry 1 rewritten, every later hash recomputed
    rows = con.execute(
        "SELECT seq, at, actor, action, payload FROM journal ORDER BY seq").fetchall()
    prev = GENESIS
    for seq, at, actor, action, payload in rows:
        actor = "someone else" if seq == 1 else actor
        digest = entry_hash(seq, at, actor, action, payload, prev)
        con.execute("UPDATE journal SET actor = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                    (actor, prev, digest, seq))
        prev = digest
    con.commit()
    con.close()
    assert blockd("audit", "verify").code == 0
    r = blockd("audit", "verify", "--anchor", anchor)
    assert r.code == 1 and "anchor 2: entry 2 has hash" in r.out and "rewritten" in r.out


def test_an_anchor_may_be_spelt_hash_at_seq(blockd: Any, db: Path) -> None:
    """HASH@SEQ (as the issue writes it) is the same anchor as SEQ:HASH, and catches the
    same rewrite."""
    seq, digest = _anchored(blockd, db).split(":")
    r = blockd("audit", "verify", "--anchor", f"{digest}@{seq}", "--json")
    assert r.code == 0 and json.loads(r.out)["ok"] is True
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    for spelling in (f"{wrong}@{seq}", f"{seq}:{wrong}"):
        r = blockd("audit", "verify", "--anchor", spelling)
        assert r.code == 1 and "anchor 2: entry 2 has hash" in r.out, spelling
    r = blockd("audit", "verify", "--anchor", f"{digest}@9")
    assert r.code == 1 and "anchor 9: the journal no longer has entry 9" in r.out


@pytest.mark.parametrize("bad", ["2", "x:abc", "2:" + "g" * 64, "2:" + "a" * 63, "",
                                 "a" * 64 + "@", "a" * 64 + "@x", "@2", "g" * 64 + "@2",
                                 "2:" + "a" * 64 + "@2", "2@" + "a" * 64])
def test_a_malformed_anchor_is_a_one_line_error(blockd: Any, db: Path, bad: str) -> None:
    _anchored(blockd, db)
    r = blockd("audit", "verify", "--anchor", bad)
    assert r.code == 2 and r.err.startswith("blockd: error: --anchor: ")
    assert "SEQ:HASH" in r.err and "HASH@SEQ" in r.err
    assert len(r.err.strip().splitlines()) == 1
