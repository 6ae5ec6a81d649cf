"""The journal: `audit log` and `audit verify`."""

from __future__ import annotations

import click

from blockd.cli.common import (
    App,
    _entry_dict,
    _summary,
    db_option,
    emit,
    json_option,
    pass_app,
)
from blockd.cli.root import cli
from blockd.core.model import InputError
from blockd.core.timeparse import parse_instant

MAX_SEQ = 2**63 - 1  # the store's integer range


@cli.group()
def audit() -> None:
    """Read and verify the hash-chained journal of every change."""


@audit.command("log")
@click.option("--since", metavar="WHEN|SEQ",
              help="Entries after sequence number SEQ, or at/after the instant WHEN.")
@click.option("--limit", type=click.IntRange(min=1, max=MAX_SEQ),
              help="At most this many entries.")
@db_option
@json_option
@pass_app
def audit_log(app: App, since: str | None, limit: int | None, db: str | None,
              as_json: bool) -> None:
    """Print the journal, oldest first."""
    since_seq, since_at = 0, None
    if since is not None:
        if since.strip().isdigit():
            since_seq = int(since)
            if since_seq > MAX_SEQ:
                raise InputError("--since", f"sequence number above {MAX_SEQ}")
        else:
            since_at = parse_instant(since, "--since")
    store = app.store(db)
    entries = store.journal(since_seq, since_at, limit)
    emit(as_json, [_entry_dict(e) for e in entries],
         lambda: "\n".join(_summary(e) for e in entries) or "no entries")


@audit.command("verify")
@db_option
@json_option
@click.pass_context
def audit_verify(ctx: click.Context, db: str | None, as_json: bool) -> None:
    """Prove the journal is unedited and the order tables match it. Exit 1 if not."""
    app: App = ctx.obj
    store = app.store(db)
    problems = store.verify()
    head = store.head()
    data = {"ok": not problems, "entries": head.seq if head else 0,
            "head_hash": head.hash if head else None, "problems": problems}
    emit(as_json, data, lambda: (
        f"journal OK: {data['entries']} entries, head {data['head_hash']}" if not problems
        else "journal FAILED verification:\n" + "\n".join(f"  {p}" for p in problems)))
    ctx.exit(0 if not problems else 1)
