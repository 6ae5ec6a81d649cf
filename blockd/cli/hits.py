"""Hits: `blockd hits` (what was blocked, how often, for how many clients) and
`blockd hits prune` (retention, for a timer; the daemons also prune)."""

from __future__ import annotations

import csv
import io

import click

from blockd.cli.common import App, actor_option, db_option, default_actor, emit, now, pass_app
from blockd.cli.root import cli
from blockd.core.hits import CHANNELS, ERROR_3SIGMA, GROUPINGS, HitQuery, HitSummary
from blockd.core.model import InputError
from blockd.core.timeparse import parse_day
from blockd.store.retention import prune


@cli.group(invoke_without_command=True)
@click.option("--order", "reference", metavar="REF", help="Only this order.")
@click.option("--target", metavar="TARGET", help="Only this target (as the order lists it).")
@click.option("--channel", type=click.Choice(CHANNELS), help="Only DNS answers, notices "
              "served (http) or packets stopped (nft).")
@click.option("--since", metavar="DAY", help="From this UTC day: YYYY-MM-DD, today, "
              "yesterday or Nd (N days ago) [default: all that is kept].")
@click.option("--until", metavar="DAY", help="To this UTC day, inclusive [default: today].")
@click.option("--by", type=click.Choice(GROUPINGS), default="order", show_default=True,
              help="One row per order, target, day or channel.")
@click.option("--top", type=click.IntRange(min=1, max=1_000_000), metavar="N",
              help="Only the N busiest rows [default: all].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV instead of a table.")
@db_option
@click.pass_context
def hits(ctx: click.Context, reference: str | None, target: str | None,
         channel: str | None, since: str | None, until: str | None, by: str,
         top: int | None, as_json: bool, as_csv: bool, db: str | None) -> None:
    """Blocked answers, notices and packets per order, target, day or channel.

    Counts are exact. CLIENTS estimates how many distinct clients made them (within about
    10%): the daemons feed a sketch with a hash keyed by a secret that changes every day
    and is never written down, so no client address is stored, not even hashed. Orders
    whose policy sets `client_anonymisation = "none"` have no estimate (shown as -).
    """
    if ctx.invoked_subcommand is not None:
        return
    if as_json and as_csv:
        raise InputError("--csv", "choose one of --json and --csv")
    app: App = ctx.ensure_object(App)
    today = now().date()
    query = HitQuery(
        reference=_nonempty("--order", reference), target=_nonempty("--target", target),
        channel=channel, by=by,
        since=parse_day(since, "--since", today) if since is not None else None,
        until=parse_day(until, "--until", today) if until is not None else None)
    if query.since and query.until and query.since > query.until:
        raise InputError("--until", "is before --since")
    store = app.store(db)
    if query.reference is not None:
        try:
            store.get_order(query.reference, with_targets=False)
        except InputError as exc:
            raise InputError("--order", exc.reason) from None
    summary = store.hit_summary(query, top)
    if as_csv:
        click.echo(_csv(summary, by), nl=False)
        return
    emit(as_json, summary.as_dict(by), lambda: _table(summary, by, top))


def _nonempty(field: str, value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise InputError(field, "must not be empty")
    return value.strip() if value is not None else None


def _clients(value: int | None) -> str:
    return "-" if value is None else f"~{value}"


def _table(summary: HitSummary, by: str, top: int | None) -> str:
    if not summary.groups:
        return "no hits"
    width = max(len(by), *(len(g.key) for g in summary.groups))
    lines = [f"{by.upper():<{width}}  {'HITS':>10}  {'CLIENTS':>9}  FIRST       LAST"]
    for g in summary.groups:
        lines.append(f"{g.key:<{width}}  {g.hits:>10}  {_clients(g.clients):>9}  "
                     f"{g.first}  {g.last}")
    label = "total" if top is None else f"top {top}"
    lines.append(f"{label:<{width}}  {summary.total:>10}  {_clients(summary.clients):>9}")
    if summary.damaged:
        lines.append(f"({summary.damaged} damaged client sketches left out of CLIENTS)")
    if not summary.estimated:
        lines.append(f"(distinct clients not estimated over {summary.sketches} buckets; "
                     "narrow with --order, --target or --since)")
    else:
        lines.append(f"(CLIENTS: distinct estimate, within ±{ERROR_3SIGMA:.0%})")
    return "\n".join(lines)


def _csv(summary: HitSummary, by: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([by, "hits", "clients", "first", "last"])
    for g in summary.groups:
        writer.writerow([g.key, g.hits, "" if g.clients is None else g.clients,
                         g.first, g.last])
    return out.getvalue()


@hits.command("prune")
@actor_option
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@pass_app
def hits_prune(app: App, actor: str | None, db: str | None, as_json: bool) -> None:
    """Delete hit buckets older than each order's policy keeps them (`[hits]
    retention_days`), journaled as one entry. The daemons do this every hour too."""
    entry = prune(app.store(db), app.policies, now(), default_actor(actor))
    if entry is None:
        emit(as_json, {"deleted": 0}, "nothing to prune")
        return
    data = entry.data
    emit(as_json, {"deleted": data["buckets"], "from": data["from"], "to": data["to"],
                   "seq": entry.seq},
         f"deleted {data['buckets']} hit buckets ({data['from']} .. {data['to']}); "
         f"journal entry {entry.seq}")

