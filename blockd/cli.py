"""The engineer's CLI. It parses, calls the core and the store, and prints; no logic here.

Every error is one line on stderr naming the field (``blockd: error: --issued: ...``) with
exit status 2, and every input is validated before the store is touched, so a refused
command leaves the database exactly as it was. ``blockd check`` exits 0 when the subject
is blocked and 1 when it is not, for scripts.
"""

from __future__ import annotations

import dataclasses
import getpass
import ipaddress
import json
import re
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import click

from blockd import __version__
from blockd.config import Address, Config, load_config, parse_address_port
from blockd.core.guard import Guard, load_guard
from blockd.core.journal import JournalEntry, order_payload
from blockd.core.model import (
    BlockdError,
    InputError,
    OrderRecord,
    Status,
    Target,
    TargetKind,
)
from blockd.core.names import parse_address, parse_target
from blockd.core.policy import Decision, Policy, PolicyBuilder
from blockd.core.timeparse import iso, parse_date, parse_instant
from blockd.enforcement import EnforcementPolicy, load_policies
from blockd.formats import FORMATS, ExportEntry
from blockd.store.store import Forced, Store

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 2
MAX_TEXT = 500


class CliError(BlockdError):
    pass


# -- shared state and options -----------------------------------------------------------


@dataclass
class App:
    """What every command needs, loaded lazily so `--help` never touches the disk."""

    config_path: Path | None

    @cached_property
    def config(self) -> Config:
        return load_config(self.config_path)

    @cached_property
    def policies(self) -> dict[str, EnforcementPolicy]:
        return load_policies(self.config.policies_dir)

    @cached_property
    def guard(self) -> Guard:
        return load_guard(self.config.policies_dir)

    def store(self, db: str | None, *, create: bool = False) -> Store:
        return Store.open(db or self.config.db, create=create)

    def policy_named(self, name: str) -> EnforcementPolicy:
        try:
            return self.policies[name]
        except KeyError:
            known = ", ".join(sorted(self.policies))
            raise InputError("--policy", f"no policy {name!r} (known: {known})") from None

    def actions(self) -> dict[str, Any]:
        return {name: p.dns_action for name, p in self.policies.items()}


pass_app = click.make_pass_decorator(App)


def db_option(f: F) -> F:
    return click.option(
        "--db", "db", envvar="BLOCKD_DB", metavar="URL_OR_PATH",
        help="Order store: a SQLite file path or an SQLAlchemy URL "
             "[env BLOCKD_DB; default from the configuration, else ./var/blockd.db].",
    )(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(f)


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


def emit(as_json: bool, data: Any, text: str | Callable[[], str]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    else:
        click.echo(text() if callable(text) else text)


def now() -> datetime:
    return datetime.now(UTC)


def default_actor(actor: str | None) -> str:
    if actor:
        return _text("--actor", actor)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _text(field: str, value: str, *, required: bool = True, limit: int = MAX_TEXT) -> str:
    value = value.strip()
    if required and not value:
        raise InputError(field, "must not be empty")
    if len(value) > limit:
        raise InputError(field, f"longer than {limit} characters")
    if _CONTROL.search(value.replace("\n", "")):
        raise InputError(field, "contains control characters")
    return value


def _optional(field: str, value: str | None) -> str | None:
    if value is None:
        return None
    return _text(field, value, required=False) or None


_REFERENCE = re.compile(r"^[\w./:()\- ]{1,120}$")


def _reference(value: str) -> str:
    ref = _text("reference", value, limit=120)
    if "\n" in ref or not _REFERENCE.match(ref):
        raise InputError(
            "reference", f"{ref!r} may only contain letters, digits, spaces and . / : ( ) - _"
        )
    return ref


def _jurisdiction(value: str | None, policy: EnforcementPolicy) -> str | None:
    if value is None:
        return policy.jurisdiction
    code = value.strip().upper()
    if not re.fullmatch(r"[A-Z]{2}", code):
        raise InputError("--jurisdiction", f"{value!r} is not an ISO 3166 two-letter code")
    return code


def _targets(app: App, texts: Sequence[str], force: bool, justification: str | None,
             field: str = "target") -> tuple[list[Target], Forced | None]:
    """Parse every target and run the guard on all of them before anything is written."""
    targets = list(dict.fromkeys(parse_target(t, field) for t in texts))
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
    forced = Forced(justification or "", tuple(str(r) for r in refusals)) if force else None
    return targets, forced


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
    forced = " FORCED: " + data["forced"]["justification"] if "forced" in data else ""
    return f"{e.seq:>6}  {e.at}  {e.actor:<20} {e.action:<14} {ref}{what}{forced}"


def _policy_at(app: App, store: Store, at: datetime) -> Policy:
    builder = PolicyBuilder(at, app.actions())
    for order, rows in store.load_rows():
        builder.load_rows(order, rows)
    return builder.policy()


# -- commands -----------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="blockd")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar="BLOCKD_CONFIG", help="Configuration file [env BLOCKD_CONFIG; default "
              "/etc/blockd/blockd.toml if present].")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """blockd: put court-ordered blocks into force, prove it, and lift them.

    Orders live in a journaled store; `blockd check NAME` tells whether and why a name or
    address is blocked. Run `blockd COMMAND --help` for details.
    """
    ctx.obj = App(config_path)


@cli.command()
@db_option
@json_option
@pass_app
def init(app: App, db: str | None, as_json: bool) -> None:
    """Create the order store, or upgrade its schema. Safe to run again."""
    store = app.store(db, create=True)
    before, after = store.init()
    state = "created" if before == 0 else "up to date" if before == after else "upgraded"
    emit(as_json, {"database": store.where, "schema": after, "state": state},
         f"{store.where}: schema v{after} ({state})")


@cli.command()
@db_option
@json_option
@pass_app
def status(app: App, db: str | None, as_json: bool) -> None:
    """Summarise the store: orders by status, orders in force, targets, journal head."""
    store = app.store(db)
    stats = store.stats()
    at = now()
    in_force = [s for s in store.list_orders(Status.ACTIVE) if s.order.in_force(at)]
    head = store.head()
    data: dict[str, Any] = {
        "database": store.where, "schema": store.schema_version(),
        "orders": {s.value: stats[s.value] for s in Status},
        "in_force": len(in_force), "targets": stats["targets"],
        "targets_in_force": sum(s.targets for s in in_force),
        "journal": {"entries": stats["journal_entries"], "head_seq": head.seq if head else 0,
                    "head_hash": head.hash if head else None},
        "policies": sorted(app.policies),
    }
    orders = ", ".join(f"{n} {s}" for s, n in data["orders"].items())
    emit(as_json, data, "\n".join([
        f"Database:  {data['database']} (schema v{data['schema']})",
        f"Orders:    {orders}; {data['in_force']} in force",
        f"Targets:   {data['targets']} ({data['targets_in_force']} in force)",
        f"Journal:   {stats['journal_entries']} entries, head "
        f"{data['journal']['head_seq']} {(head.hash[:16] + '...') if head else '-'}",
        f"Policies:  {', '.join(data['policies'])}",
    ]))


@cli.group()
def order() -> None:
    """Add, inspect, suspend, resume and lift court orders."""


@order.command("add")
@click.argument("reference")
@click.argument("targets", nargs=-1, metavar="[TARGET]...")
@click.option("--authority", required=True, help="Court or regulator that issued the order.")
@click.option("--issued", required=True, metavar="DATE", help="Date of the decision (YYYY-MM-DD).")
@click.option("--received", metavar="WHEN", help="When the ISP received it [default: now].")
@click.option("--effective-from", metavar="WHEN",
              help="Start of enforcement [default: immediately].")
@click.option("--until", metavar="WHEN",
              help="Sunset: enforcement ends (a bare date covers that whole day).")
@click.option("--requested-by", metavar="TEXT", help="The applicant (e.g. the rights holder).")
@click.option("--legal-basis", metavar="TEXT", help="Statute or provision the order rests on.")
@click.option("--jurisdiction", metavar="CC", help="ISO 3166 country code [default: policy's].")
@click.option("--policy", "policy_name", default="default", show_default=True,
              help="Enforcement policy in policies/ (dns action, notice, deadline).")
@click.option("--notice", metavar="TEXT", help="Extra text shown on the notice page.")
@click.option("--contact", metavar="TEXT", help="Where subscribers can ask about the block.")
@click.option("--appeal", metavar="TEXT", help="How to apply to vary or discharge the order.")
@force_options
@actor_option
@db_option
@json_option
@pass_app
def order_add(app: App, reference: str, targets: tuple[str, ...], authority: str, issued: str,
              received: str | None, effective_from: str | None, until: str | None,
              requested_by: str | None, legal_basis: str | None, jurisdiction: str | None,
              policy_name: str, notice: str | None, contact: str | None, appeal: str | None,
              force: bool, justification: str | None, actor: str | None, db: str | None,
              as_json: bool) -> None:
    """Record a new order REFERENCE (the case or decision number) and its targets.

    A TARGET is a domain (covering its subdomains), `=name` for that name only, `*.name`
    for its subdomains only, an IPv4/IPv6 address or a prefix. Unicode names are stored
    as punycode. WHEN is `now`, YYYY-MM-DD or an ISO 8601 date-time; without an offset it
    is read in the policy's time zone.

    Example: blockd order add FI-15124/2006 --authority "Copenhagen City Court"
    --issued 2006-10-25 --policy dk allofmp3.com
    """
    at = now()
    ref = _reference(reference)
    policy = app.policy_named(policy_name)
    tz = policy.tz
    issued_on = parse_date(issued, "--issued")
    received_at = parse_instant(received, "--received", tz, now=at) if received else at
    start = parse_instant(effective_from, "--effective-from", tz, now=at) if effective_from \
        else None
    end = parse_instant(until, "--until", tz, end_of_day=True, now=at) if until else None
    if issued_on > at.date():
        raise InputError("--issued", f"{issued} is in the future")
    if received_at > at:
        raise InputError("--received", f"{received} is in the future")
    if received_at.astimezone(tz).date() < issued_on:
        raise InputError("--received", "is before the order was issued")
    if end is not None and end <= (start or received_at):
        raise InputError("--until", "must be after the start of enforcement")
    record = OrderRecord(
        reference=ref, authority=_text("--authority", authority), issued_on=issued_on,
        received_at=received_at, effective_from=start, effective_until=end,
        jurisdiction=_jurisdiction(jurisdiction, policy),
        requested_by=_optional("--requested-by", requested_by),
        legal_basis=_optional("--legal-basis", legal_basis),
        notice=_optional("--notice", notice), contact=_optional("--contact", contact),
        appeal=_optional("--appeal", appeal), policy=policy.name,
    )
    parsed, forced = _targets(app, targets, force, justification)
    store = app.store(db)
    entries = store.add_order(record, parsed, actor=default_actor(actor), at=at, forced=forced)
    data = _order_dict(record, policy, at, parsed)
    data["journal_seq"] = entries[-1].seq
    emit(as_json, data, lambda: f"added order {ref} with {len(parsed)} target(s)"
         f"{' (FORCED past the guard)' if forced else ''}; journal seq {entries[-1].seq}"
         + ("" if record.in_force(at) else "; not yet in force"))


@order.command("list")
@click.option("--status", "status_", type=click.Choice([s.value for s in Status]),
              help="Only orders with this status.")
@click.option("--in-force", is_flag=True, help="Only orders in force now (or at --at).")
@click.option("--at", "at_text", metavar="WHEN", help="Evaluate 'in force' at this instant.")
@db_option
@json_option
@pass_app
def order_list(app: App, status_: str | None, in_force: bool, at_text: str | None,
               db: str | None, as_json: bool) -> None:
    """List orders, oldest first."""
    at = parse_instant(at_text, "--at") if at_text else now()
    store = app.store(db)
    rows = store.list_orders(Status(status_) if status_ else None)
    if in_force:
        rows = [r for r in rows if r.order.in_force(at)]
    data = [
        {**_order_dict(r.order, app.policies.get(r.order.policy), at), "targets": r.targets}
        for r in rows
    ]

    def table() -> str:
        if not rows:
            return "no orders"
        head = f"{'REFERENCE':<24} {'STATUS':<10} {'IN FORCE':<8} {'TARGETS':>7}  AUTHORITY"
        return "\n".join([head] + [
            f"{d['reference']:<24} {d['status']:<10} {'yes' if d['in_force'] else 'no':<8} "
            f"{d['targets']:>7}  {d['authority']}" for d in data
        ])

    emit(as_json, data, table)


@order.command("show")
@click.argument("reference")
@click.option("--limit", default=100, show_default=True,
              help="Show at most this many targets (0 = all).")
@db_option
@json_option
@pass_app
def order_show(app: App, reference: str, limit: int, db: str | None, as_json: bool) -> None:
    """Show one order with its targets, status history and enforcement deadline."""
    if limit < 0:
        raise InputError("--limit", "must be 0 or more")
    store = app.store(db)
    record = store.get_order(_reference(reference))
    targets = sorted(record.targets)
    shown = targets if limit == 0 else targets[:limit]
    data = _order_dict(record, app.policies.get(record.policy), now(), shown, len(targets))
    history = store.journal(reference=record.reference)
    data["history"] = [_entry_dict(e) for e in history]
    emit(as_json, data, lambda: _fmt_order(data) + "\nHistory:\n"
         + "\n".join(_summary(e) for e in history))


@order.group("target")
def target_group() -> None:
    """Add or remove targets of an existing order (e.g. new mirror domains)."""


@target_group.command("add")
@click.argument("reference")
@click.argument("targets", nargs=-1, required=True, metavar="TARGET...")
@force_options
@actor_option
@db_option
@json_option
@pass_app
def target_add(app: App, reference: str, targets: tuple[str, ...], force: bool,
               justification: str | None, actor: str | None, db: str | None,
               as_json: bool) -> None:
    """Add TARGETs to order REFERENCE (targets already on it are reported, not doubled)."""
    ref = _reference(reference)
    parsed, forced = _targets(app, targets, force, justification)
    store = app.store(db)
    added, already = store.add_targets(ref, parsed, actor=default_actor(actor), at=now(),
                                       forced=forced)
    emit(as_json, {"reference": ref, "added": [t.spec for t in added],
                   "already": [t.spec for t in already]},
         f"order {ref}: added {len(added)} target(s)"
         + (f", {len(already)} already present" if already else ""))


@target_group.command("remove")
@click.argument("reference")
@click.argument("targets", nargs=-1, required=True, metavar="TARGET...")
@actor_option
@db_option
@json_option
@pass_app
def target_remove(app: App, reference: str, targets: tuple[str, ...], actor: str | None,
                  db: str | None, as_json: bool) -> None:
    """Remove TARGETs from order REFERENCE (each must be on it)."""
    ref = _reference(reference)
    parsed = list(dict.fromkeys(parse_target(t) for t in targets))
    store = app.store(db)
    removed = store.remove_targets(ref, parsed, actor=default_actor(actor), at=now())
    emit(as_json, {"reference": ref, "removed": [t.spec for t in removed]},
         f"order {ref}: removed {len(removed)} target(s)")


def _status_command(name: str, new: Status, doc: str) -> None:
    @order.command(name, help=doc)
    @click.argument("reference")
    @click.option("--reason", required=True, help="Why (recorded in the journal).")
    @actor_option
    @db_option
    @json_option
    @pass_app
    def command(app: App, reference: str, reason: str, actor: str | None, db: str | None,
                as_json: bool) -> None:
        ref = _reference(reference)
        why = _text("--reason", reason)
        store = app.store(db)
        entry = store.set_status(ref, new, why, actor=default_actor(actor), at=now())
        emit(as_json, {"reference": ref, "status": new.value, "reason": why,
                       "journal_seq": entry.seq},
             f"order {ref}: {new.value} ({why}); journal seq {entry.seq}")


_status_command("suspend", Status.SUSPENDED,
                "Suspend order REFERENCE (e.g. pending appeal); its targets stop being blocked.")
_status_command("resume", Status.ACTIVE, "Resume a suspended order REFERENCE.")
_status_command("lift", Status.LIFTED,
                "Lift order REFERENCE for good (overturned, discharged or expired).")


def _decision_dict(d: Decision, policies: dict[str, EnforcementPolicy]) -> dict[str, Any]:
    return {
        "subject": d.subject, "blocked": d.blocked,
        "action": d.action.value if d.action else None,
        "matches": [
            {"reference": m.order.reference, "authority": m.order.authority,
             "target": m.target.spec, "action": m.action.value, "policy": m.order.policy,
             "effective_until": iso(m.order.effective_until)}
            for m in d.matches
        ],
    }


@cli.command()
@click.argument("subject", metavar="NAME_OR_IP")
@click.option("--at", "at_text", metavar="WHEN", help="Decide as of this instant [default: now].")
@db_option
@json_option
@click.pass_context
def check(ctx: click.Context, subject: str, at_text: str | None, db: str | None,
          as_json: bool) -> None:
    """Say whether NAME_OR_IP is blocked, by which order(s) and why.

    Exit status: 0 blocked, 1 not blocked, 2 error.
    """
    app: App = ctx.obj
    at = parse_instant(at_text, "--at") if at_text else now()
    address = parse_address(subject, "NAME_OR_IP")
    if address is not None and address.kind is not TargetKind.IP:
        raise InputError("NAME_OR_IP", "give one address, not a prefix")
    target = address or parse_target(subject.lstrip("=").removeprefix("*."), "NAME_OR_IP")
    store = app.store(db)
    builder = PolicyBuilder(at, app.actions())
    for order_record, targets in store.candidates(target):
        builder.load(order_record, targets)
    decision = builder.policy().decide(target.value)
    data = _decision_dict(decision, app.policies)

    def text() -> str:
        if not decision.blocked:
            return f"{decision.subject}: not blocked"
        lines = [f"{decision.subject}: BLOCKED ({decision.action})"]
        for m in decision.matches:
            lines.append(f"  order {m.order.reference} of {m.order.authority} "
                         f"via {m.target.spec} -> {m.action}")
        return "\n".join(lines)

    emit(as_json, data, text)
    ctx.exit(0 if decision.blocked else 1)


@cli.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path, allow_dash=True))
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS)), required=True,
              help="list: one target a line; csv: a 'target' column; rpz: an RPZ zone file.")
@click.option("--order", "reference", required=True, help="Order the targets belong to.")
@click.option("--dry-run", is_flag=True, help="Parse and check, but write nothing.")
@force_options
@actor_option
@db_option
@json_option
@pass_app
def import_(app: App, file: Path, fmt: str, reference: str, dry_run: bool, force: bool,
            justification: str | None, actor: str | None, db: str | None,
            as_json: bool) -> None:
    """Add the targets in FILE to an order. All or nothing: one bad line imports none."""
    ref = _reference(reference)
    try:
        raw = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except OSError as exc:
        raise InputError("FILE", f"cannot read {file}: {exc.strerror}") from None
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError("FILE", f"{file} is not UTF-8 (byte {exc.start})") from None
    try:
        parsed_targets = FORMATS[fmt].parse(content)
    except InputError as exc:  # FormatError: field is "line N"
        raise InputError(str(file), f"{exc.field}: {exc.reason}") from None
    targets, forced = _targets(app, [t.spec for t in parsed_targets], force, justification,
                               field=str(file))
    store = app.store(db)
    if dry_run:
        store.get_order(ref, with_targets=False)
        emit(as_json, {"reference": ref, "parsed": len(targets), "dry_run": True},
             f"{file}: {len(targets)} valid target(s) for order {ref}; nothing written")
        return
    added, already = store.add_targets(ref, targets, actor=default_actor(actor), at=now(),
                                       forced=forced)
    emit(as_json, {"reference": ref, "added": len(added), "already": len(already)},
         f"order {ref}: imported {len(added)} target(s) from {file}"
         + (f", {len(already)} already present" if already else ""))


@cli.command()
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS)), default="list",
              show_default=True, help="Output format.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file instead of stdout.")
@click.option("--at", "at_text", metavar="WHEN", help="Export what is in force at this instant.")
@click.option("--zone", metavar="NAME", help="RPZ zone origin [default: configuration's].")
@db_option
@pass_app
def export(app: App, fmt: str, output: Path | None, at_text: str | None, zone: str | None,
           db: str | None) -> None:
    """Export the targets of orders in force (RPZ loads into BIND, Unbound, PowerDNS)."""
    at = parse_instant(at_text, "--at") if at_text else now()
    origin = app.config.rpz_zone if zone is None else (
        parse_target(zone.rstrip("."), "--zone").value + ".")
    store = app.store(db)
    head = store.head()
    policy = _policy_at(app, store, at)
    entries = sorted(
        (ExportEntry(t, policy.action_for(o), o.reference, o.authority)
         for o, t in policy.entries()),
        key=lambda e: (e.target, e.reference),
    )
    module = FORMATS[fmt]
    if fmt == "rpz":
        ttl = min((p.dns_ttl for p in app.policies.values()), default=30)
        content = module.render(
            entries, origin=origin, serial=head.seq if head else 0,
            notice_ipv4=app.config.notice_ipv4, notice_ipv6=app.config.notice_ipv6, ttl=ttl,
        )
    elif fmt == "list":
        content = module.render(entries, generated_at=at)
    else:
        content = module.render(entries)
    skipped = [line for line in content.splitlines() if line.startswith("; NOT EXPORTED")]
    for line in skipped:
        click.echo(f"blockd: warning: {line.removeprefix('; ')}", err=True)
    if output is None:
        click.echo(content, nl=False)
        return
    try:
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text(content, encoding="utf-8")
        tmp.replace(output)
    except OSError as exc:
        raise InputError("--output", f"cannot write {output}: {exc.strerror}") from None
    click.echo(f"wrote {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} to {output}",
               err=True)


@cli.group()
def audit() -> None:
    """Read and verify the hash-chained journal of every change."""


@audit.command("log")
@click.option("--since", metavar="WHEN|SEQ",
              help="Entries after sequence number SEQ, or at/after the instant WHEN.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many entries.")
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


@cli.group()
def nft() -> None:
    """Put address and prefix orders into the kernel's nftables (table inet blockd).

    Talks to the kernel over netlink; needs root or CAP_NET_ADMIN. Only the table
    `inet blockd` is ever touched.
    """


def _nft_state(app: App, db: str | None) -> tuple[Any, Any, bool]:
    """(wanted, in the kernel, table exists) per (IP version, action) set."""
    from blockd.nft import netlink, ruleset
    from blockd.nft.guarded import refuser

    store = app.store(db)
    actions = {name: p.nft_action for name, p in app.policies.items()}
    want = ruleset.desired(_policy_at(app, store, now()), actions,
                           refused=refuser(app.guard, store.forced_targets()))
    names = netlink.existing_sets(ruleset.TABLE)
    current = {key: netlink.read_set(ruleset.TABLE, name, key[0]) if name in names else {}
               for key, name in ruleset.SETS.items()}
    return want, current, bool(names)


@nft.command("apply")
@click.option("--dry-run", is_flag=True, help="Print the difference, change nothing.")
@db_option
@json_option
@pass_app
def nft_apply(app: App, dry_run: bool, db: str | None, as_json: bool) -> None:
    """Make the kernel match the orders in force: compute the difference, print it, and
    apply it in one atomic batch. Running it again changes nothing.

    Each order's policy says what happens to traffic for its addresses ([nft] action):
    drop, reject (TCP reset / ICMP admin-prohibited), or notice (TCP port 80 to the notice
    server, the rest rejected). TCP 443 to the notice address is refused at once.
    """
    from blockd.nft import netlink, ruleset

    want, current, exists = _nft_state(app, db)
    changes = ruleset.diff({k: set(v) for k, v in current.items()}, want)
    data: dict[str, Any] = {
        "table_created": not exists and not dry_run, "dry_run": dry_run,
        "add": [{"prefix": str(n), "action": c.key[1].value} for c in changes for n in c.add],
        "remove": [{"prefix": str(n), "action": c.key[1].value}
                   for c in changes for n in c.remove]}
    if not dry_run:
        netlink.apply(ruleset.plan(changes, exists, ruleset.Notice.from_config(app.config),
                                   app.config.nft_local_output))

    def text() -> str:
        lines = [f"+ {d['prefix']} ({d['action']})" for d in data["add"]] + \
            [f"- {d['prefix']} ({d['action']})" for d in data["remove"]]
        verb = "would change" if dry_run else "applied"
        return "\n".join([*lines, f"{verb}: {len(data['add'])} added, "
                                   f"{len(data['remove'])} removed"])

    emit(as_json, data, text)


@nft.command("show")
@db_option
@json_option
@pass_app
def nft_show(app: App, db: str | None, as_json: bool) -> None:
    """What the kernel holds against what it should, with per-prefix packet counters."""
    want, current, _ = _nft_state(app, db)
    rows = []
    for key in sorted(want, key=lambda k: (k[0], k[1].value)):
        kernel = current[key]
        for net in sorted(set(kernel) | want[key], key=str):
            packets, bytes_ = kernel.get(net, (0, 0))
            rows.append({"prefix": str(net), "action": key[1].value, "in_kernel": net in kernel,
                         "wanted": net in want[key], "packets": packets, "bytes": bytes_})
    emit(as_json, rows, lambda: "\n".join(
        [f"{'PREFIX':<40} {'ACTION':<7} {'KERNEL':<7} {'WANTED':<7} {'PACKETS':>9}"]
        + [f"{r['prefix']:<40} {r['action']:<7} {'yes' if r['in_kernel'] else 'no':<7} "
           f"{'yes' if r['wanted'] else 'no':<7} {r['packets']:>9}" for r in rows]))


@nft.command("flush")
def nft_flush() -> None:
    """Remove table inet blockd from the kernel (enforcement of address orders stops)."""
    from blockd.nft import netlink, ruleset

    batch = netlink.Batch(ruleset.TABLE)
    batch.delete_table()
    try:
        netlink.apply(batch)
    except netlink.NftError as exc:
        if "No such file" not in str(exc):
            raise
        click.echo("table inet blockd was not there")
        return
    click.echo("table inet blockd removed")


@cli.group()
def serve() -> None:
    """Run a daemon in the foreground (systemd runs these)."""


def _addresses(values: tuple[str, ...], field: str, default_port: int) -> tuple[Address, ...]:
    try:
        return tuple(parse_address_port(v, field, default_port) for v in values)
    except ValueError as exc:
        raise InputError(field, str(exc).split(": ", 1)[-1]) from None


@serve.command("dns")
@click.option("--listen", multiple=True, metavar="ADDR:PORT",
              help="Address to answer on, UDP and TCP; repeat for several (IPv6 as "
                   "[::1]:5353) [default: configuration's, else 127.0.0.1:5353].")
@click.option("--upstream", multiple=True, metavar="ADDR:PORT",
              help="Resolver to forward unblocked queries to; repeat for several, tried "
                   "in order [default: configuration's].")
@click.option("--allow", multiple=True, metavar="NETWORK",
              help="Client network allowed to query; repeat [default: loopback only].")
@click.option("--workers", type=click.IntRange(1, 256), metavar="N",
              help="Worker processes sharing the ports (SO_REUSEPORT) [default: 1].")
@click.option("--metrics", metavar="ADDR:PORT",
              help="Serve Prometheus /metrics and /healthz here (port 0: any free port) "
                   "[default: configuration's, else off].")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@db_option
@pass_app
def serve_dns_cmd(app: App, listen: tuple[str, ...], upstream: tuple[str, ...],
                  allow: tuple[str, ...], workers: int | None, metrics: str | None,
                  verbose: bool, db: str | None) -> None:
    """The DNS resolver: forwards and caches, answers names under orders in force per
    their policy with EDE 16 (Censored), and follows the journal live."""
    from blockd.daemon import run_dns, setup_logging

    listen_a = _addresses(listen, "--listen", 5353)
    metrics_a = _addresses((metrics,), "--metrics", 9253)[0] if metrics else None
    upstream_a = _addresses(upstream, "--upstream", 53)
    try:
        networks = tuple(str(ipaddress.ip_network(n, strict=False)) for n in allow)
    except ValueError as exc:
        raise InputError("--allow", str(exc)) from None

    def make_config() -> Config:
        config = load_config(app.config_path).with_db(db)
        dns = config.dns
        dns = dataclasses.replace(
            dns, listen=listen_a or dns.listen, upstream=upstream_a or dns.upstream,
            allow=networks or dns.allow, workers=workers or dns.workers,
            metrics=metrics_a or dns.metrics)
        return dataclasses.replace(config, dns=dns)

    config = make_config()
    Store.open(config.db).close()  # fail now, with a clear message, if the store is unusable
    app.policies  # noqa: B018 - validate the policy files before binding any port
    setup_logging(verbose)
    raise SystemExit(run_dns(make_config, config.dns.workers))


@serve.command("nft")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@db_option
@pass_app
def serve_nft_cmd(app: App, verbose: bool, db: str | None) -> None:
    """Keep the kernel's table inet blockd equal to the address orders in force, following
    the journal. On exit the rules stay in place; `blockd nft flush` removes them."""
    from blockd.daemon import run_nft, setup_logging

    def make_config() -> Config:
        return load_config(app.config_path).with_db(db)

    Store.open(make_config().db).close()
    app.policies  # noqa: B018 - validate the policy files first
    setup_logging(verbose)
    raise SystemExit(run_nft(make_config))


@serve.command("http")
@click.option("--listen", multiple=True, metavar="ADDR:PORT",
              help="Address for the notice pages; repeat for several [default: "
                   "configuration's, else 127.0.0.1:8080].")
@click.option("--tls-listen", metavar="ADDR:PORT",
              help="Also serve HTTPS here, with --cert/--key of the ISP's own notice host.")
@click.option("--cert", type=click.Path(dir_okay=False, path_type=Path),
              help="PEM certificate chain for --tls-listen.")
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path),
              help="PEM private key for --tls-listen.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@db_option
@pass_app
def serve_http_cmd(app: App, listen: tuple[str, ...], tls_listen: str | None,
                   cert: Path | None, key: Path | None, verbose: bool,
                   db: str | None) -> None:
    """The notice server: answers 451 with the orders behind a block, in the subscriber's
    language, for any path on a blocked host; follows the journal live."""
    from blockd.daemon import run_http, setup_logging

    listen_a = _addresses(listen, "--listen", 8080)
    tls_a = _addresses((tls_listen,), "--tls-listen", 443)[0] if tls_listen else None

    def make_config() -> Config:
        config = load_config(app.config_path).with_db(db)
        return dataclasses.replace(
            config, notice_listen=listen_a or config.notice_listen,
            tls_listen=tls_a or config.tls_listen, tls_cert=cert or config.tls_cert,
            tls_key=key or config.tls_key)

    config = make_config()
    Store.open(config.db).close()
    app.policies  # noqa: B018 - validate the policy files before binding any port
    setup_logging(verbose)
    raise SystemExit(run_http(make_config))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: one-line errors, never a traceback for a known failure."""
    try:
        result = cli.main(args=list(argv) if argv is not None else None,
                          prog_name="blockd", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        return EXIT_ERROR
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        click.echo(f"blockd: error: {exc.format_message()}{hint}", err=True)
        return EXIT_ERROR
    except click.Abort:
        click.echo("blockd: aborted", err=True)
        return EXIT_ERROR
    except (BlockdError, click.ClickException) as exc:
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        click.echo(f"blockd: error: {message}".replace("\n", " "), err=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    return result if isinstance(result, int) else 0

