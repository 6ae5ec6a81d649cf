"""The journal: `audit log` and `audit verify`."""

from __future__ import annotations

import re

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


@audit.command("anchor")
@db_option
@json_option
@pass_app
def audit_anchor(app: App, db: str | None, as_json: bool) -> None:
    """Print the journal head as SEQ:HASH, to record outside this store (a ticket, the
    regulator's report, another machine). `audit verify --anchor SEQ:HASH` (or HASH@SEQ)
    later proves that the journal still holds that entry unchanged: rows deleted from the
    end, or an entry rewritten with every later hash recomputed, cannot hide from it."""
    head = app.store(db).head()
    anchor = f"{head.seq}:{head.hash}" if head else "0:"
    emit(as_json, {"seq": head.seq if head else 0, "hash": head.hash if head else None,
                   "anchor": anchor, "at": head.at if head else None}, anchor)


_HASH = re.compile(r"[0-9a-f]{64}")


def _anchor(text: str) -> tuple[int, str]:
    """(seq, hash) of an anchor spelt SEQ:HASH (as `audit anchor` prints it and the RPZ
    zone's TXT carries it) or HASH@SEQ (as the issue spells it): both are unambiguous,
    since a hash is 64 hex digits and a seq only digits."""
    value = text.strip()
    if "@" in value:
        digest, _, seq = value.partition("@")
    else:
        seq, _, digest = value.partition(":")
    if not (":" in value) ^ ("@" in value) or not seq.isdigit() or int(seq) > MAX_SEQ \
            or not _HASH.fullmatch(digest):
        raise InputError("--anchor", f"{text!r} is neither SEQ:HASH (as `blockd audit "
                                     "anchor` prints it) nor HASH@SEQ")
    return int(seq), digest


@audit.command("verify")
@click.option("--anchor", "anchors", multiple=True, metavar="SEQ:HASH|HASH@SEQ",
              help="A head recorded earlier with `blockd audit anchor` (SEQ:HASH; "
                   "HASH@SEQ is the same anchor): the journal must still hold that entry "
                   "with that hash. Repeat for several.")
@db_option
@json_option
@click.pass_context
def audit_verify(ctx: click.Context, anchors: tuple[str, ...], db: str | None,
                 as_json: bool) -> None:
    """Prove the journal is unedited and the order tables match it, and that it still
    holds every anchor given. Exit 1 if not."""
    app: App = ctx.obj
    wanted = [_anchor(a) for a in anchors]
    store = app.store(db)
    problems = store.verify()
    for seq, digest in wanted:
        found = store.journal(seq - 1, limit=1) if seq > 0 else []
        if not found or found[0].seq != seq:
            problems.append(f"anchor {seq}: the journal no longer has entry {seq} "
                            "(entries deleted from its end?)")
        elif found[0].hash != digest:
            problems.append(f"anchor {seq}: entry {seq} has hash {found[0].hash[:16]}..., "
                            f"the anchor says {digest[:16]}... (history rewritten)")
    head = store.head()
    data = {"ok": not problems, "entries": head.seq if head else 0,
            "head_hash": head.hash if head else None, "problems": problems}
    emit(as_json, data, lambda: (
        f"journal OK: {data['entries']} entries, head {data['head_hash']}" if not problems
        else "journal FAILED verification:\n" + "\n".join(f"  {p}" for p in problems)))
    ctx.exit(0 if not problems else 1)
