"""Orders: add, list, show, targets, suspend/resume/lift; and `check`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import click

from blockd.cli.common import (
    App,
    _distinct_reference,
    _entry_dict,
    _fmt_order,
    _jurisdiction,
    _optional,
    _order_dict,
    _reference,
    _summary,
    _targets,
    _text,
    actor_option,
    db_option,
    default_actor,
    emit,
    force_options,
    json_option,
    now,
    order_proof,
    pass_app,
)
from blockd.cli.root import cli
from blockd.core.hits import HitQuery
from blockd.core.model import (
    InputError,
    OrderRecord,
    Status,
    TargetKind,
)
from blockd.core.names import parse_target
from blockd.core.proof import MET, MISSED, NO_DEADLINE, OVERDUE, PENDING, OrderProof, late
from blockd.core.timeparse import iso, parse_date, parse_instant


@cli.group()
def order() -> None:
    """Add, inspect, change, suspend, resume and lift court orders."""


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
    received_at = parse_instant(received, "--received", tz, now=at) if received is not None \
        else at
    start = parse_instant(effective_from, "--effective-from", tz, now=at) \
        if effective_from is not None \
        else None
    end = parse_instant(until, "--until", tz, end_of_day=True, now=at) if until is not None \
        else None
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
        notice=_optional("--notice", notice, multiline=True),
        contact=_optional("--contact", contact),
        appeal=_optional("--appeal", appeal), policy=policy.name,
    )
    parsed, forced, collateral = _targets(app, targets, force, justification)
    store = app.store(db)
    _distinct_reference(store, ref, force)
    entries = store.add_order(record, parsed, actor=default_actor(actor), at=at, forced=forced,
                              collateral=collateral)
    data = _order_dict(record, policy, at, parsed)
    data["journal_seq"] = entries[-1].seq
    overdue = late(record, policy, at)
    if overdue is not None:
        data["late"] = True
        click.echo(f"blockd: warning: order {ref} is added after its enforcement deadline "
                   f"({iso(overdue)}, {policy.deadline} after receipt under policy "
                   f"{policy.name}); `order show` and `report` will show the miss", err=True)
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
    at = parse_instant(at_text, "--at") if at_text is not None else now()
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
    store = app.quick_store(db)
    record = store.get_order(_reference(reference), with_targets=False)
    shown, total, kinds = store.some_targets(record.reference, limit)
    data = _order_dict(record, app.policies.get(record.policy), now(), shown, total)
    history = store.journal(reference=record.reference)
    data["history"] = [_entry_dict(e) for e in history]
    at = now()
    proof = order_proof(store, record, app.policies.get(record.policy), history, at,
                        {TargetKind(k) for k in kinds})
    data["enforcement"] = proof.as_dict() if proof is not None else None
    week = store.hit_summary(HitQuery(reference=record.reference,
                                      since=at.date() - timedelta(days=6)))
    everything = store.hit_summary(HitQuery(reference=record.reference))
    data["hits"] = {"last_7_days": week.total, "last_7_days_clients": week.clients,
                    "total": everything.total, "clients": everything.clients,
                    "since": everything.groups[0].first.isoformat()
                    if everything.groups and everything.groups[0].first else None}
    emit(as_json, data, lambda: _fmt_order(data) + "\n" + _fmt_proof(proof)
         + _fmt_hits(data["hits"]) + "\nHistory:\n" + "\n".join(_summary(e) for e in history))


def _fmt_proof(proof: OrderProof | None) -> str:
    if proof is None:
        return ""
    marks = {MET: "deadline met", MISSED: "DEADLINE MISSED", PENDING: "not yet in force",
             OVERDUE: "NOT IN FORCE, DEADLINE PASSED", NO_DEADLINE: "no deadline"}
    lines = [f"{'Enforcement:':<17}received {iso(proof.received)}"
             + (f", due {iso(proof.due)}" if proof.due else "")
             + f": {marks[proof.verdict]}"]
    for c in proof.channels:
        since = f"in force since {iso(c.since)}" if c.since else "no record of enforcement"
        lines.append(f"  {c.channel:<5} {since}  [{marks[c.verdict]}]"
                     + (f"  ({', '.join(c.instances)})" if c.instances else ""))
    return "\n".join(lines) + "\n"


def _fmt_hits(hits: dict[str, Any]) -> str:
    def clients(n: int | None) -> str:
        return f", ~{n} distinct clients" if n is not None else ""
    return (f"{'Hits:':<17}{hits['last_7_days']} in the last 7 days"
            f"{clients(hits['last_7_days_clients'])}; {hits['total']} in total"
            f"{clients(hits['clients'])}" + (f" since {hits['since']}" if hits["since"] else "")
            + "\n")


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
    parsed, forced, collateral = _targets(app, targets, force, justification)
    store = app.quick_store(db)
    added, already = store.add_targets(ref, parsed, actor=default_actor(actor), at=now(),
                                       forced=forced, collateral=collateral)
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


def _amend(app: App, reference: str, changes: dict[str, Any], reason: str,
           actor: str | None, db: str | None, as_json: bool, verb: str) -> None:
    """Validate and journal ``changes`` (already parsed) with the reason."""
    ref = _reference(reference)
    why = _text("--reason", reason)
    store = app.store(db)
    order = store.get_order(ref, with_targets=False)
    at = now()
    if order.status is Status.LIFTED:
        raise InputError("reference", f"order {ref} is lifted; add a new order instead")
    until = changes.get("effective_until", order.effective_until)
    if "effective_until" in changes and until is not None:
        start = order.effective_from or order.received_at
        if until <= start:
            raise InputError("--until", "must be after the start of enforcement")
        if until <= at:
            raise InputError("--until", "is in the past (lift the order to end it now)")
    changed = {k: v for k, v in changes.items() if getattr(order, k) != v}
    if not changed:
        first = next(iter(changes))
        option = "--until" if first == "effective_until" else "--" + first.replace("_", "-")
        raise InputError(option, f"order {ref} already says that; nothing to {verb}")
    entry = store.amend(ref, changed, why, actor=default_actor(actor), at=at)
    shown = {k: iso(v) if isinstance(v, datetime) else v for k, v in changed.items()}
    emit(as_json, {"reference": ref, "changes": shown, "previous": entry.data["previous"],
                   "reason": why, "journal_seq": entry.seq},
         f"order {ref}: {', '.join(f'{k} -> {v}' for k, v in shown.items())} ({why}); "
         f"journal seq {entry.seq}")


@order.command("extend")
@click.argument("reference")
@click.option("--until", required=True, metavar="WHEN",
              help="The new end of enforcement (a bare date covers that whole day; read in "
                   "the order's policy time zone).")
@click.option("--reason", required=True, help="Why, e.g. the court's extension (journaled).")
@actor_option
@db_option
@json_option
@pass_app
def order_extend(app: App, reference: str, until: str, reason: str, actor: str | None,
                 db: str | None, as_json: bool) -> None:
    """Move the end of order REFERENCE to WHEN (UK orders are extended past their
    sunset). Journaled with the previous end and the reason; the daemons follow."""
    order = app.store(db).get_order(_reference(reference), with_targets=False)
    tz = app.policies[order.policy].tz if order.policy in app.policies else None
    end = parse_instant(until, "--until", tz, end_of_day=True, now=now())
    if order.effective_until is not None and end <= order.effective_until:
        raise InputError("--until", f"is not after the current end "
                                    f"({iso(order.effective_until)}); use `order amend "
                                    "--until` to shorten an order")
    _amend(app, reference, {"effective_until": end}, reason, actor, db, as_json, "extend")


@order.command("amend")
@click.argument("reference")
@click.option("--authority", metavar="TEXT", help="Court or regulator that issued the order.")
@click.option("--jurisdiction", metavar="CC", help="ISO 3166 country code.")
@click.option("--requested-by", metavar="TEXT", help="The applicant.")
@click.option("--legal-basis", metavar="TEXT", help="Statute or provision.")
@click.option("--notice", metavar="TEXT", help="Extra text shown on the notice page.")
@click.option("--contact", metavar="TEXT", help="Where subscribers can ask about the block.")
@click.option("--appeal", metavar="TEXT", help="How to apply to vary or discharge the order.")
@click.option("--until", metavar="WHEN", help="A new end of enforcement (earlier or later).")
@click.option("--reason", required=True, help="Why, e.g. the court's amending decision "
              "(journaled).")
@actor_option
@db_option
@json_option
@pass_app
def order_amend(app: App, reference: str, authority: str | None, jurisdiction: str | None,
                requested_by: str | None, legal_basis: str | None, notice: str | None,
                contact: str | None, appeal: str | None, until: str | None, reason: str,
                actor: str | None, db: str | None, as_json: bool) -> None:
    """Correct or change the facts of order REFERENCE as the court amends it.

    Targets change with `order target add|remove`; the reference, the dates it was issued
    and received and the policy cannot change (add a new order). Each change is
    journaled with the previous value and the reason.
    """
    order = app.store(db).get_order(_reference(reference), with_targets=False)
    policy = app.policies.get(order.policy)
    changes: dict[str, Any] = {}
    if authority is not None:
        changes["authority"] = _text("--authority", authority)
    if jurisdiction is not None and policy is not None:
        changes["jurisdiction"] = _jurisdiction(jurisdiction, policy)
    for field, value in (("requested_by", requested_by), ("legal_basis", legal_basis),
                         ("contact", contact), ("appeal", appeal)):
        if value is not None:
            changes[field] = _text("--" + field.replace("_", "-"), value)
    if notice is not None:
        changes["notice"] = _text("--notice", notice, multiline=True)
    if until is not None:
        changes["effective_until"] = parse_instant(
            until, "--until", policy.tz if policy else None, end_of_day=True, now=now())
    if not changes:
        raise InputError("amend", "name at least one field to change (see --help)")
    _amend(app, reference, changes, reason, actor, db, as_json, "amend")


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


