"""What every command shares: the lazily loaded app state, options, input checks
and output. The commands parse, call the core and the store, and print; no logic here."""

from __future__ import annotations

import getpass
import re
import socket
import sys
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

# the light part, re-exported: every command module takes its options from here
from blockd.cli.app import EXIT_ERROR as EXIT_ERROR
from blockd.cli.app import App as App
from blockd.cli.app import F
from blockd.cli.app import db_option as db_option
from blockd.cli.app import emit as emit
from blockd.cli.app import json_option as json_option
from blockd.cli.app import now as now
from blockd.cli.app import pass_app as pass_app
from blockd.core.enforcement import EnforcementPolicy
from blockd.core.index import BlockIndex, IndexBuilder
from blockd.core.journal import ORDER_ADD, JournalEntry, order_payload
from blockd.core.model import (
    BlockdError,
    InputError,
    OrderRecord,
    Target,
    TargetKind,
)
from blockd.core.names import parse_target
from blockd.core.proof import OrderProof, prove
from blockd.core.timeparse import iso
from blockd.formats import BREAKS
from blockd.store.records import Forced

if TYPE_CHECKING:
    from blockd.cli.app import AnyStore

MAX_TEXT = 500


class CliError(BlockdError):
    pass


# -- shared state and options -----------------------------------------------------------


def actor_option(f: F) -> F:
    return click.option(
        "--actor", envvar="BLOCKD_ACTOR", metavar="NAME",
        help="Who makes the change, recorded in the journal [env BLOCKD_ACTOR; default "
             "user@host].",
    )(f)


def force_options(f: F) -> F:
    f = click.option(
        "--justification", metavar="TEXT",
        help="Why the overblocking guard is overridden (required with --force; journaled).",
    )(f)
    return click.option(
        "--force", is_flag=True,
        help="Block even what the overblocking guard refuses (needs --justification).",
    )(f)


def default_actor(actor: str | None) -> str:
    if actor:
        return _text("--actor", actor)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")  # and bidi overrides


def _text(field: str, value: str, *, limit: int = MAX_TEXT, multiline: bool = False) -> str:
    """A free-text value: not empty, not too long, no control characters (a newline only
    where the field is text of several lines: a newline in a one-line field would forge
    lines in `audit log` and in logs)."""
    value = value.strip()
    if not value:
        raise InputError(field, "must not be empty")
    if len(value) > limit:
        raise InputError(field, f"longer than {limit} characters")
    if _CONTROL.search(value.replace("\n", "") if multiline else value):
        raise InputError(field, "contains control characters" if multiline or "\n" not in value
                         else "must be one line")
    return value


def _optional(field: str, value: str | None, *, multiline: bool = False) -> str | None:
    """Absent is None; given, it must be a real value (an empty one is a mistake)."""
    if value is None:
        return None
    return _text(field, value, multiline=multiline)


def printable(text: str) -> str:
    """Control characters shown escaped, so stored text cannot forge output lines."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


_REFERENCE = re.compile(r"^[\w./:()\- ]{1,120}$")


def _reference(value: str) -> str:
    ref = unicodedata.normalize("NFKC", _text("reference", value, limit=120))
    if not _REFERENCE.match(ref):
        raise InputError(
            "reference", f"{ref!r} may only contain letters, digits, spaces and . / : ( ) - _"
        )
    if not ref[0].isalnum():
        raise InputError("reference", f"{ref!r} must start with a letter or a digit")
    if any(part in ("..", ".") for part in re.split(r"[/\\]", ref)):
        raise InputError("reference", f"{ref!r} holds a '.' or '..' path segment")
    return ref


# Latin look-alikes among Cyrillic and Greek letters: "RЕF-1" (Cyrillic Е) must not pass for
# "REF-1", an order that already exists
_LOOKALIKES = str.maketrans(
    "АВЕКМНОРСТХУІЈЅаеорсухіјѕԁԛԝ" "ΑΒΕΖΗΙΚΜΝΟΡΤΥΧαικνορτυχ",
    "ABEKMHOPCTXYIJSaeopcyxijsdqw" "ABEZHIKMNOPTYXaiknoptux",
)


def skeleton(reference: str) -> str:
    """What a reference looks like: NFKC, Latin look-alikes mapped, case folded."""
    return unicodedata.normalize("NFKC", reference).translate(_LOOKALIKES).casefold()


def _distinct_reference(store: AnyStore, ref: str, force: bool) -> None:
    """Refuse a new reference that looks like an existing one (unless forced)."""
    mine = skeleton(ref)
    clash = next((s.order.reference for s in store.list_orders()
                  if s.order.reference != ref and skeleton(s.order.reference) == mine), None)
    if clash is None:
        return
    if not force:
        raise InputError("reference", f"{ref!r} looks like existing order {clash!r}; use "
                                      "--force --justification TEXT if it is another order")
    click.echo(f"blockd: warning: {ref!r} looks like existing order {clash!r}", err=True)


def _jurisdiction(value: str | None, policy: EnforcementPolicy) -> str | None:
    if value is None:
        return policy.jurisdiction
    code = value.strip().upper()
    if not re.fullmatch(r"[A-Z]{2}", code):
        raise InputError("--jurisdiction", f"{value!r} is not an ISO 3166 two-letter code")
    return code


def _targets(app: App, texts: Sequence[str | Target], force: bool,
             justification: str | None, field: str = "target", *, unique: bool = False,
             ) -> tuple[list[Target], Forced | None, tuple[str, ...]]:
    """Parse every target (an importer's are parsed already, and ``unique``: no second
    million-entry dict) and run the guard on all of them before anything is written."""
    targets = [t for t in texts if isinstance(t, Target)] if unique else list(dict.fromkeys(
        t if isinstance(t, Target) else parse_target(t, field) for t in texts))
    refusals = [r for t in targets for r in app.guard.check(t)]
    if justification is not None and not force:
        raise InputError("--justification", "only meaningful with --force")
    if force:
        if not justification or not justification.strip():
            raise InputError("--force", "needs --justification TEXT saying why")
        justification = _text("--justification", justification)
    if refusals and not force:
        extra = f" (and {len(refusals) - 1} more)" if len(refusals) > 1 else ""
        raise InputError(
            field, f"refused by the overblocking guard: {refusals[0]}{extra}; "
                   "use --force --justification TEXT if the order really says so"
        )
    forced = Forced(justification or "", tuple(str(r) for r in refusals),
                    frozenset(r.target for r in refusals)) if force else None
    collateral = tuple(w for t in targets for w in app.guard.collateral(t))
    for warning in collateral:
        click.echo(f"blockd: warning: {warning}", err=True)
    return targets, forced, collateral


def _order_dict(order: OrderRecord, policy: EnforcementPolicy | None, at: datetime,
                targets: Sequence[Target] | None = None, total: int | None = None
                ) -> dict[str, Any]:
    data = order_payload(order)
    data["in_force"] = order.in_force(at)
    if policy is not None and policy.deadline is not None:
        data["deadline"] = str(policy.deadline)
        data["enforce_by"] = iso(policy.deadline.due(order.received_at, policy.tz))
    if targets is not None:
        data["targets"] = [t.spec for t in sorted(targets)]
        data["targets_total"] = total if total is not None else len(targets)
    return data


def _fmt_order(data: dict[str, Any]) -> str:
    labels = [
        ("reference", "Reference"), ("authority", "Authority"),
        ("jurisdiction", "Jurisdiction"), ("issued_on", "Issued"),
        ("received_at", "Received"), ("effective_from", "Effective from"),
        ("effective_until", "Effective until"), ("requested_by", "Requested by"),
        ("legal_basis", "Legal basis"), ("policy", "Policy"), ("deadline", "Deadline"),
        ("enforce_by", "Enforce by"), ("contact", "Contact"), ("appeal", "Appeal"),
        ("notice", "Notice"), ("status", "Status"), ("status_reason", "Status reason"),
        ("in_force", "In force"),
    ]
    lines = []
    for key, label in labels:
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, bool):
            value = "yes" if value else "no"
        lines.append(f"{label + ':':<17}{value}")
    if "targets" in data:
        lines.append(f"{'Targets:':<17}{data['targets_total']}")
        lines.extend(f"  {t}" for t in data["targets"])
        hidden = data["targets_total"] - len(data["targets"])
        if hidden > 0:
            lines.append(f"  ... and {hidden} more (--limit 0 shows all)")
    return "\n".join(lines)


def _entry_dict(e: JournalEntry) -> dict[str, Any]:
    return {"seq": e.seq, "at": e.at, "actor": e.actor, "action": e.action,
            "payload": e.data, "prev_hash": e.prev_hash, "hash": e.hash}


def _summary(e: JournalEntry) -> str:
    data = e.data
    ref = data.get("reference") or data.get("order", {}).get("reference", "")
    what = ""
    if "targets" in data:
        shown = ", ".join(data["targets"][:3])
        more = len(data["targets"]) - 3
        what = f" [{shown}{f', +{more}' if more > 0 else ''}]" if data["targets"] else ""
    if "status" in data:
        what = f" -> {data['status']} ({data['reason']})"
    if "changes" in data:
        what = " " + ", ".join(f"{k}: {data['previous'].get(k) or '(none)'} -> {v}"
                               for k, v in data["changes"].items()) + f" ({data['reason']})"
    if "buckets" in data:
        what = f" {data['buckets']} hit buckets {data['from']} .. {data['to']}"
    forced = " FORCED: " + data["forced"]["justification"] if "forced" in data else ""
    return printable(f"{e.seq:>6}  {e.at}  {e.actor:<20} {e.action:<14} {ref}{what}{forced}")


def order_proof(store: AnyStore, order: OrderRecord, policy: EnforcementPolicy | None,
                history: Sequence[JournalEntry], at: datetime,
                kinds: set[TargetKind] | None = None) -> OrderProof | None:
    """Received -> in force per channel for an order, from the enforcement timeline."""
    added = next((e.seq for e in history if e.action == ORDER_ADD), None)
    if added is None:
        return None
    return prove(order, policy, added, store.enforcements([e.seq for e in history]), at,
                 kinds)


def _index_at(app: App, store: AnyStore, at: datetime, *, progress: bool = False
              ) -> BlockIndex:
    """The orders in force at ``at``; ``progress``: a bar over the rows on a terminal."""
    builder = IndexBuilder(at, app.actions())
    if not progress:
        for order, rows in store.load_rows():
            builder.load_rows(order, rows)
        return builder.index()
    from blockd.cli.progress import Progress, counted

    with Progress("reading orders", store.stats()["targets"]) as bar:
        for order, rows in store.load_rows():
            builder.load_rows(order, counted(rows, bar.update))
    return builder.index()


MAX_IMPORT = 512 * 1024 * 1024  # bytes: far above a million-line list, far below memory


def _read_bounded(stream: Any) -> bytes:
    """Up to MAX_IMPORT + 1 bytes, in blocks: ``read(MAX_IMPORT + 1)`` would allocate the
    whole limit (512 MiB) up front, whatever the file's size."""
    parts: list[bytes] = []
    size = 0
    while size <= MAX_IMPORT:
        block = stream.read(min(1 << 20, MAX_IMPORT + 1 - size))
        if not block:
            break
        parts.append(block)
        size += len(block)
    return b"".join(parts)


def read_input(file: Path) -> bytes:
    """The file's bytes: a regular file or standard input (``-``), at most MAX_IMPORT."""
    try:
        if str(file) == "-":
            raw = _read_bounded(sys.stdin.buffer)
        else:
            if file.exists() and not file.is_file():  # /dev/zero, a FIFO: no end
                raise InputError("FILE", f"{file} is not a regular file")
            with file.open("rb") as f:
                raw = _read_bounded(f)
    except OSError as exc:
        raise InputError("FILE", f"cannot read {file}: {exc.strerror}") from None
    if len(raw) > MAX_IMPORT:
        raise InputError("FILE", f"{file} is larger than {MAX_IMPORT // 2**20} MiB")
    return raw


def input_lines(file: Path, read: Callable[[int], None] | None = None) -> Iterator[str]:
    """The file's lines, decoded one at a time (``formats.lines`` semantics: CRLF, CR or
    LF, a leading BOM dropped): a million-line list is parsed without holding its text.
    The same checks as :func:`read_input` (regular file or ``-``, at most MAX_IMPORT,
    UTF-8), raised when the offending line is reached."""
    try:
        if str(file) == "-":
            yield from _lines_of(sys.stdin.buffer, file, read)
            return
        if file.exists() and not file.is_file():  # /dev/zero, a FIFO: no end
            raise InputError("FILE", f"{file} is not a regular file")
        with file.open("rb") as fh:
            yield from _lines_of(fh, file, read)
    except OSError as exc:
        raise InputError("FILE", f"cannot read {file}: {exc.strerror}") from None


def _lines_of(stream: Any, file: Path, read: Callable[[int], None] | None
              ) -> Iterator[str]:
    offset, pending, first = 0, "", True
    while True:
        raw = stream.readline(MAX_IMPORT + 1 - offset)  # bounded: stdin may never end a line
        if not raw:
            break
        if offset + len(raw) > MAX_IMPORT:
            raise InputError("FILE", f"{file} is larger than {MAX_IMPORT // 2**20} MiB")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError("FILE", f"{file} is not UTF-8 (byte {offset + exc.start})"
                             ) from None
        offset += len(raw)
        if read is not None:
            read(len(raw))
        if first:
            text, first = text.removeprefix("\ufeff"), False
        parts = BREAKS.split(pending + text)
        pending = parts.pop()  # after the last break: the start of the next line
        yield from parts
    yield pending


def write_output(output: Path, content: str) -> None:
    """Write a whole file atomically (a temporary file renamed over it): a reader never
    sees half a report or export."""
    if not str(output).strip() or not output.name:
        raise InputError("--output", "must name a file")
    tmp = output.with_name(output.name + ".tmp")
    try:
        tmp.write_text(content, encoding="utf-8")
        tmp.replace(output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError("--output", f"cannot write {output}: {exc.strerror}") from None
    except BaseException:  # Ctrl-C mid-write: no half file left beside the output
        tmp.unlink(missing_ok=True)
        raise
