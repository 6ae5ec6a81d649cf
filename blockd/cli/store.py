"""`blockd store`: backup, restore, adopt and check the order store.

Restore and adopt are the explicit operator acts that let the daemons follow a store whose
journal does not continue the one they enforce (they refuse it otherwise): each appends a
``store.adopt`` journal entry naming the heads it replaces.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import click

from blockd.cli.common import (
    App,
    _text,
    actor_option,
    db_option,
    default_actor,
    emit,
    json_option,
    now,
    pass_app,
)
from blockd.cli.root import cli
from blockd.core.model import InputError
from blockd.store import backup as ops
from blockd.store.engine import StoreDamaged
from blockd.store.snapshot import SnapshotInfo, snapshots
from blockd.store.store import Store

HEAD = re.compile(r"^(\d{1,18}):([0-9a-f]{64})$")
RESTORE_HELP = ("restore the latest good backup with `blockd store restore BACKUP` (safe "
                "while the daemons run; they keep enforcing their last good policy meanwhile)")


@cli.group("store")
def store_group() -> None:
    """Back up, restore, adopt and check the order store (safe while daemons run)."""


def _db(app: App, db: str | None) -> str:
    if db is not None and not db.strip():
        raise InputError("--db", "must not be empty")
    return db or app.config.db


def _proof(p: ops.Proof) -> dict[str, Any]:
    return {"file": str(p.path), "seq": p.seq, "head": p.head, "orders": p.orders,
            "targets": p.targets, "bytes": p.size}


@store_group.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@db_option
@json_option
@pass_app
def backup_cmd(app: App, file: Path, force: bool, db: str | None, as_json: bool) -> None:
    """Copy the live store to FILE with SQLite's online backup (consistent while daemons
    read and engineers write), prove the copy (journal chain, tables, pages), and only
    then put it in place. Copying the database file by hand is not safe."""
    if not str(file).strip():
        raise InputError("FILE", "must not be empty")
    proof = ops.backup(_db(app, db), file, force=force)
    emit(as_json, _proof(proof),
         f"backed up to {file}: journal seq {proof.seq} ({(proof.head or '-')[:16]}), "
         f"{proof.orders} orders, {proof.targets} targets, {proof.size} bytes; proven")


def _not_continued(store: Store, heads: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The heads the store's journal does not continue (neither holds nor adopts)."""
    return sorted({(seq, h) for seq, h in heads if not store.continues(seq, h)})


def _snapshot_heads(app: App, db: str | None) -> list[tuple[int, str]]:
    """The heads of this store's daemons' snapshots (the state directory follows --db)."""
    return [(s.seq, s.hash) for s in snapshots(app.config.with_db(db).state_path())
            if isinstance(s, SnapshotInfo) and s.hash is not None]


def _confirm(yes: bool, question: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise InputError("--yes", "required when not asked on a terminal")
    if not click.confirm(question, default=False):
        raise click.Abort()


@store_group.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--reason", metavar="TEXT", help="Why, for the journal [default: restored "
              "from FILE].")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@actor_option
@db_option
@json_option
@pass_app
def restore_cmd(app: App, file: Path, reason: str | None, yes: bool, actor: str | None,
                db: str | None, as_json: bool) -> None:
    """Put the backup FILE in place of the live store, safely while daemons run: FILE is
    proven first and only read; its pages are written into the live database through
    SQLite (a live file SQLite cannot open is moved aside with its -wal/-shm). The journal
    then records the adoption, naming the heads the daemons enforced, so they follow the
    restored store within a second."""
    target = _db(app, db)
    why = _text("--reason", reason) if reason is not None else f"restored from {file}"
    who = default_actor(actor)
    ops.sqlite_path(target)  # PostgreSQL: pg_restore, said before anything is read
    ops.prove(file)  # refuse a bad backup before touching anything
    _confirm(yes, f"Replace the live store {ops.sqlite_path(target)} with {file}?")
    before = ops.live_head(target)
    heads = _snapshot_heads(app, db) + ([before] if before is not None else [])
    proof, moved = ops.restore(target, file)
    store = Store.open(target)
    try:
        replaced = _not_continued(store, heads)
        entry = store.adopt(replaced, reason=why, actor=who, at=now(), source=str(file))
    finally:
        store.close()
    data = {**_proof(proof), "adopted_at_seq": entry.seq, "replaces":
            [{"seq": s, "hash": h} for s, h in replaced],
            "moved_aside": str(moved) if moved else None}
    emit(as_json, data, lambda: "\n".join([
        f"restored {file}: journal seq {proof.seq}, {proof.orders} orders, "
        f"{proof.targets} targets",
        *([f"the unreadable store was moved to {moved}"] if moved else []),
        f"journal entry {entry.seq} adopts it in place of "
        + (", ".join(f"seq {s} ({h[:16]})" for s, h in replaced) or "nothing (it continues "
           "what the daemons enforce)")]))


@store_group.command("adopt")
@click.option("--head", "extra", multiple=True, metavar="SEQ:HASH",
              help="Also a head enforced elsewhere (e.g. an appliance with its own state "
                   "directory); repeatable.")
@click.option("--reason", metavar="TEXT", help="Why, for the journal.", required=True)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@actor_option
@db_option
@json_option
@pass_app
def adopt_cmd(app: App, extra: tuple[str, ...], reason: str, yes: bool, actor: str | None,
              db: str | None, as_json: bool) -> None:
    """Let the daemons follow this store although its journal does not continue the one
    they enforce (it was replaced or re-created): journals a store.adopt entry naming the
    heads of the snapshots in the state directory that it does not continue, and every
    --head."""
    heads = []
    for text in extra:
        m = HEAD.match(text.strip())
        if m is None:
            raise InputError("--head", f"{text!r} is not SEQ:HASH (a journal seq and a "
                             "64-digit hex hash)")
        heads.append((int(m.group(1)), m.group(2)))
    why = _text("--reason", reason)
    who = default_actor(actor)
    store = app.store(db)
    try:
        replaced = _not_continued(store, _snapshot_heads(app, db) + heads)
        if not replaced:
            emit(as_json, {"adopted": False, "replaces": []},
                 "nothing to adopt: the store continues every head the daemons enforce")
            return
        _confirm(yes, f"Adopt {store.where} in place of {len(replaced)} head(s)?")
        entry = store.adopt(replaced, reason=why, actor=who, at=now())
    finally:
        store.close()
    emit(as_json, {"adopted": True, "seq": entry.seq,
                   "replaces": [{"seq": s, "hash": h} for s, h in replaced]},
         f"journal entry {entry.seq} adopts this store in place of "
         + ", ".join(f"seq {s} ({h[:16]})" for s, h in replaced))


@store_group.command("migrate")
@click.option("--from", "source", metavar="DB", required=True,
              help="The store to copy (a SQLite path or a URL).")
@click.option("--to", "destination", metavar="DB", required=True,
              help="An empty database to copy it into, e.g. postgresql://user@host/blockd.")
@json_option
def migrate_cmd(source: str, destination: str, as_json: bool) -> None:
    """Copy a whole store (orders, targets, journal, hits, enforcement timeline, verify
    runs) into an empty database, in one transaction, and prove the copy (journal chain,
    tables == replay). The source is only read; a destination that holds any table is
    refused. Stop the writers first: entries appended to the source afterwards are not
    copied."""
    from blockd.store.copy import migrate

    copied = migrate(source, destination)
    emit(as_json, {"from": copied.source, "to": copied.destination, "rows": copied.rows,
                   "seq": copied.seq, "head": copied.head},
         f"copied {copied.source} to {copied.destination}: journal seq {copied.seq} "
         f"({(copied.head or '-')[:16]}), {copied.rows['orders']} orders, "
         f"{copied.rows['targets']} targets, {copied.rows['journal']} journal entries, "
         f"{copied.rows['hits']} hit buckets; proven")


def _damaged(as_json: bool, where: str, problems: list[str], pages: bool | None) -> int:
    data = {"database": where, "intact": False, "problems": problems[:20],
            "pages_checked": pages, "recover": RESTORE_HELP}
    emit(as_json, data, lambda: "\n".join([
        f"{where}: store damaged", *(f"  {p}" for p in problems[:20]),
        f"To recover: {RESTORE_HELP}."]))
    return 1


@store_group.command("check")
@click.option("--budget", type=click.FloatRange(0.1, 3600), default=60.0, show_default=True,
              help="Seconds the page check may take.")
@db_option
@json_option
@pass_app
def check_cmd(app: App, budget: float, db: str | None, as_json: bool) -> int:
    """Check every page of the store and prove its journal (chain, tables). Exit 0 intact,
    1 damaged (with how to restore), 2 if it cannot be opened."""
    try:
        store = app.store(db)
    except StoreDamaged as exc:
        return _damaged(as_json, str(ops.sqlite_path(_db(app, db))), [str(exc)], None)
    try:
        pages = store.quick_check(budget)
        problems = [*(pages or []), *([] if pages else store.verify())]
    except StoreDamaged as exc:
        pages, problems = None, [str(exc)]
    finally:
        store.close()
    if problems:
        return _damaged(as_json, store.where, problems, pages is not None)
    checked = pages is not None and not store.postgres  # SQLite's page check only
    data = {"database": store.where, "intact": True, "problems": [],
            "pages_checked": checked}
    emit(as_json, data, f"{store.where}: intact" + (
        "" if checked else " (journal proven; the pages are PostgreSQL's: pg_amcheck)"
        if store.postgres else f" (journal proven; the page check ran out of its "
        f"{budget:.0f} s budget)"))
    return 0
