"""`blockd store backup|restore|adopt|check`, `blockd status` on a damaged store, and `init`
beside a stale WAL: the real CLI on real SQLite files (another process holding the live
store open where it matters)."""

from __future__ import annotations

import gc
import hashlib
import json
import subprocess
import sys
import threading
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from conftest import Runner, db_digest

from blockd.core.model import OrderRecord
from blockd.core.names import parse_target
from blockd.store.snapshot import snapshot_path, write_snapshot
from blockd.store.store import Store

ADD = ["order", "add", "--authority", "Court", "--issued", "2024-01-01"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line_error(r: object, *fragments: str) -> None:
    code, err = r.code, r.err  # type: ignore[attr-defined]
    assert code == 2 and err.count("\n") == 1 and err.startswith("blockd: error: "), err
    for f in fragments:
        assert f in err, err


@pytest.fixture
def live(blockd: Runner, db: Path) -> Path:
    assert blockd("init").code == 0
    assert blockd(*ADD[:2], "A-1", *ADD[2:], "a.example").code == 0
    return db


def test_backup_while_another_thread_writes(blockd: Runner, live: Path, tmp_path: Path
                                            ) -> None:
    stop = threading.Event()

    def write() -> None:
        store = Store.open(str(live))
        n = 0
        while not stop.is_set():
            n += 1
            store.add_order(OrderRecord(f"W-{n}", "Court", date(2024, 1, 1),
                                        datetime.now(UTC)),
                            [parse_target(f"w{n}.example")], actor="t", at=datetime.now(UTC))
        store.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for i in range(3):
            r = blockd("store", "backup", str(tmp_path / f"b{i}.db"), "--json")
            assert r.code == 0, r.err
            data = json.loads(r.out)
            assert data["seq"] >= 1 and data["targets"] == data["orders"]
    finally:
        stop.set()
        writer.join()
    for i in range(3):  # each copy proves itself on its own
        assert blockd("audit", "verify", "--db", str(tmp_path / f"b{i}.db")).code == 0
    one_line_error(blockd("store", "backup", str(tmp_path / "b0.db")), "exists", "--force")
    assert blockd("store", "backup", str(tmp_path / "b0.db"), "--force").code == 0


HOLDER = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("PRAGMA journal_mode=WAL")
con.execute("BEGIN"); con.execute("SELECT count(*) FROM journal").fetchone()
print("holding", flush=True)
sys.stdin.readline()
con.execute("COMMIT")
"""


def test_restore_under_a_process_holding_the_store(blockd: Runner, live: Path,
                                                   tmp_path: Path) -> None:
    """Another process has the live store open in WAL mode with newer frames; the backup
    is written into it through SQLite: the result proves itself, holds the backup's
    orders and the adoption, and the backup file is byte-identical."""
    backup = tmp_path / "backup.db"
    assert blockd("store", "backup", str(backup)).code == 0
    before = sha256(backup)
    old = Store.open(str(live))
    old_head = old.head()
    old.close()
    assert blockd(*ADD[:2], "B-1", *ADD[2:], "b.example").code == 0
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(live)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    try:
        assert Path(f"{live}-wal").exists()
        r = blockd("store", "restore", str(backup), "--yes", "--json")
        assert r.code == 0, r.err
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(10)
        assert holder.stdout is not None
        holder.stdout.close()
    data = json.loads(r.out)
    assert data["seq"] == 1 and data["replaces"] and data["moved_aside"] is None
    assert sha256(backup) == before
    assert blockd("audit", "verify").code == 0
    assert blockd("check", "a.example").code == 0 and blockd("check", "b.example").code == 1
    log = blockd("audit", "log", "--json")
    assert json.loads(log.out)[-1]["action"] == "store.adopt"
    assert old_head is not None


def test_restore_over_garbage_and_over_nothing(blockd: Runner, live: Path, tmp_path: Path
                                               ) -> None:
    backup = tmp_path / "backup.db"
    assert blockd("store", "backup", str(backup)).code == 0
    gc.collect()  # no handle of this process's CLI runs may close (and checkpoint) later
    for suffix in ("-wal", "-shm"):
        Path(f"{live}{suffix}").unlink(missing_ok=True)
    live.write_bytes(b"garbage!" * 4096)
    r = blockd("store", "restore", str(backup), "--yes", "--json")
    assert r.code == 0, r.err
    moved = Path(json.loads(r.out)["moved_aside"])
    assert moved.read_bytes().startswith(b"garbage!")  # kept, for the post-mortem
    assert blockd("audit", "verify").code == 0
    for suffix in ("", "-wal", "-shm"):
        Path(f"{live}{suffix}").unlink(missing_ok=True)
    assert blockd("store", "restore", str(backup), "--yes").code == 0
    assert blockd("check", "a.example").code == 0


def test_a_bad_backup_is_refused_and_nothing_changes(blockd: Runner, live: Path,
                                                     tmp_path: Path) -> None:
    backup = tmp_path / "backup.db"
    assert blockd("store", "backup", str(backup)).code == 0
    con = __import__("sqlite3").connect(backup)
    con.execute("UPDATE journal SET payload = replace(payload, 'a.example', 'x.example')")
    con.commit()
    con.close()
    digest = db_digest(live)
    one_line_error(blockd("store", "restore", str(backup), "--yes"), "does not prove")
    one_line_error(blockd("store", "restore", str(tmp_path / "none.db"), "--yes"),
                   "no such file")
    assert db_digest(live) == digest
    good = tmp_path / "good.db"
    assert blockd("store", "backup", str(good)).code == 0
    one_line_error(blockd("store", "restore", str(good)), "--yes")  # not asked on a terminal
    assert db_digest(live) == digest


def test_adopt_names_the_heads_daemons_enforce(blockd: Runner, live: Path) -> None:
    state = live.with_name(live.name + "-state")
    order = OrderRecord("A-1", "Court", date(2024, 1, 1), datetime.now(UTC))
    write_snapshot(snapshot_path(state, "dns"), instance="dns", seq=7, head_hash="ab" * 32,
                   orders=[(order, ["a.example"])], policies={})
    status = json.loads(blockd("status", "--json").out)
    assert status["daemons"][0]["instance"] == "dns"
    assert status["daemons"][0]["state"].startswith("refused")
    one_line_error(blockd("store", "adopt", "--reason", "x", "--head", "7:xyz", "--yes"),
                   "--head")
    digest = db_digest(live)
    one_line_error(blockd("store", "adopt", "--reason", "", "--yes"), "--reason")
    assert db_digest(live) == digest
    r = blockd("store", "adopt", "--reason", "new store", "--head", f"9:{'cd' * 32}",
               "--yes", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert {(h["seq"], h["hash"]) for h in data["replaces"]} == {(7, "ab" * 32),
                                                                (9, "cd" * 32)}
    status = json.loads(blockd("status", "--json").out)
    assert status["daemons"][0]["state"] == "ok"
    r = blockd("store", "adopt", "--reason", "again", "--yes")
    assert r.code == 0 and "nothing to adopt" in r.out
    assert blockd("audit", "verify").code == 0


def test_check_and_status_see_pages_damaged_in_place(blockd: Runner, live: Path,
                                                     tmp_path: Path) -> None:
    names = tmp_path / "names.txt"
    names.write_text("".join(f"n{i}.example\n" for i in range(3000)))
    assert blockd("import", str(names), "--format", "list", "--order", "A-1").code == 0
    assert blockd("store", "check").code == 0
    con = __import__("sqlite3").connect(live)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    with live.open("r+b") as fh:
        fh.seek(4096)
        fh.write(bytes(range(256)) * (9 * 4096 // 256))
    r = blockd("store", "check", "--json")
    assert r.code == 1 and json.loads(r.out)["intact"] is False
    r = blockd("status")
    assert r.code == 1 and "damaged" in r.out and "blockd store restore" in r.out


def test_init_refuses_a_stale_wal_beside_a_missing_database(blockd: Runner, db: Path
                                                            ) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{db}-wal").write_bytes(b"\x37\x7f\x06\x82" + bytes(28))
    one_line_error(blockd("init"), "--db", "-wal", "move it away")
    assert not db.exists()
