"""`blockd report`: one order's compliance record as a self-contained document.

Everything comes from the store: the order as amended, its targets and their history from
the journal (each entry's hash, and the journal head, so the report can be checked later
with `blockd audit verify --anchor`), the enforcement timeline against the policy's
deadline, hits per day (an inline SVG chart: no script, no network asset), and the last
`blockd verify` run that covered the order. The HTML is rendered with Jinja2
(autoescaped) from ``templates/report.html``; ``--format json`` gives the same data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from blockd import __version__
from blockd.core.enforcement import EnforcementPolicy
from blockd.core.hits import HitQuery
from blockd.core.journal import (
    ORDER_ADD,
    TARGET_ADD,
    TARGET_REMOVE,
    JournalEntry,
    order_payload,
)
from blockd.core.proof import MET, MISSED, NO_DEADLINE, OVERDUE, PENDING, OrderProof, prove
from blockd.core.timeparse import iso
from blockd.store.store import Store

TEMPLATES = Path(__file__).resolve().parent / "templates"
CHART_DAYS = 90
VERDICTS = {MET: "deadline met", MISSED: "deadline MISSED", PENDING: "not yet in force",
            OVERDUE: "not in force and the deadline has passed",
            NO_DEADLINE: "no deadline in this policy"}


STEPS = ("order and targets", "journal", "enforcement", "hits", "last verify")


def build(store: Store, reference: str, policies: Mapping[str, EnforcementPolicy],
          at: datetime, step: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The report's data (what ``--format json`` prints); ``step`` hears each of
    ``STEPS`` as it starts (the CLI's progress bar)."""
    step(STEPS[0])
    order = store.get_order(reference)
    policy = policies.get(order.policy)
    step(STEPS[1])
    history = store.journal(reference=order.reference)
    head = store.head()
    added = next((e.seq for e in history if e.action == ORDER_ADD), 0)
    step(STEPS[2])
    proof = prove(order, policy, added, store.enforcements([e.seq for e in history]), at)
    step(STEPS[3])
    days = store.hit_summary(HitQuery(reference=order.reference, by="day",
                                      since=at.date() - timedelta(days=CHART_DAYS - 1)))
    everything = store.hit_summary(HitQuery(reference=order.reference, by="channel"))
    step(STEPS[4])
    verified = store.last_verify(order.reference)
    return {
        "generated_at": iso(at), "blockd_version": __version__,
        "order": order_payload(order),
        "policy": {"name": order.policy, "deadline": str(policy.deadline)
                   if policy and policy.deadline else None,
                   "timezone": policy.timezone if policy else None},
        "in_force_now": order.in_force(at),
        "summary": _summary(proof),
        "enforcement": proof.as_dict(),
        "targets": _targets(history, sorted(t.spec for t in order.targets)),
        "journal": [{"seq": e.seq, "at": e.at, "actor": e.actor, "action": e.action,
                     "what": _what(e), "hash": e.hash, "prev_hash": e.prev_hash}
                    for e in history],
        "journal_head": {"seq": head.seq, "hash": head.hash, "at": head.at} if head else None,
        "hits": {"days": [{"day": g.key, "hits": g.hits, "clients": g.clients}
                          for g in days.groups],
                 "chart_days": CHART_DAYS, "total": everything.total,
                 "by_channel": {g.key: g.hits for g in everything.groups},
                 "clients": everything.clients},
        "verify": _verify(verified),
    }


def _summary(proof: OrderProof) -> str:
    since = f"in force since {when(iso(proof.since) or '')}" if proof.since else \
        "no record of enforcement yet"
    due = f" (due {when(iso(proof.due) or '')})" if proof.due else ""
    return f"{since}; {VERDICTS[proof.verdict]}{due}"


def _what(entry: JournalEntry) -> str:
    data = entry.data
    if entry.action in (ORDER_ADD, TARGET_ADD, TARGET_REMOVE):
        targets = data.get("targets", [])
        shown = ", ".join(targets[:5]) + (f" and {len(targets) - 5} more"
                                          if len(targets) > 5 else "")
        verb = {ORDER_ADD: "order received with", TARGET_ADD: "added",
                TARGET_REMOVE: "removed"}[entry.action]
        return f"{verb} {shown}" if targets else "order received"
    if "status" in data:
        return f"status {data['status']}: {data.get('reason', '')}"
    if "changes" in data:
        return "; ".join(f"{k.replace('_', ' ')}: {data['previous'].get(k) or '(none)'} -> {v}"
                         for k, v in data["changes"].items()) + f" ({data['reason']})"
    return entry.action


def _targets(history: Sequence[JournalEntry], current: list[str]) -> list[dict[str, Any]]:
    """Every target the order ever named: when added and (if so) removed, by entry."""
    rows: dict[str, dict[str, Any]] = {}
    for e in history:
        if e.action not in (ORDER_ADD, TARGET_ADD, TARGET_REMOVE):
            continue
        for spec in e.data.get("targets", []):
            if e.action == TARGET_REMOVE:
                rows.setdefault(spec, {"target": spec, "added": None, "added_seq": None})
                rows[spec].update(removed=e.at, removed_seq=e.seq)
            else:
                rows[spec] = {"target": spec, "added": e.at, "added_seq": e.seq,
                              "removed": None, "removed_seq": None}
    for spec in current:
        rows.setdefault(spec, {"target": spec, "added": None, "added_seq": None,
                               "removed": None, "removed_seq": None})
    return sorted(rows.values(), key=lambda r: (r["removed"] is not None, r["target"]))


def _verify(run: dict[str, Any] | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {"at": run["at"], "checked": run["checked"], "failed": run["failed"],
            "sampled": run["sampled"], "journal_seq": run["head_seq"],
            "failures": run.get("failures", [])[:10]}


# -- rendering -------------------------------------------------------------------------


def chart(days: Sequence[Mapping[str, Any]], until: date, span: int = CHART_DAYS) -> str:
    """Hits per day as an inline SVG bar chart (no script; readable when printed)."""
    counts = {d["day"]: int(d["hits"]) for d in days}
    start = until - timedelta(days=span - 1)
    values = [counts.get((start + timedelta(days=i)).isoformat(), 0) for i in range(span)]
    top = max(values) or 1
    width, height, left, bottom = 640, 160, 48, 22
    bar = (width - left) / span
    plot = height - bottom - 8
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label="Hits per day, {start} to {until}" class="chart">',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" '
             'stroke="#555" stroke-width="1"/>',
             f'<text x="{left - 6}" y="14" text-anchor="end" font-size="11">{top}</text>',
             f'<text x="{left - 6}" y="{height - bottom}" text-anchor="end" '
             'font-size="11">0</text>']
    for i, value in enumerate(values):
        if value:
            h = max(1.0, plot * value / top)
            parts.append(f'<rect x="{left + i * bar + 0.5:.1f}" y="{height - bottom - h:.1f}" '
                         f'width="{max(bar - 1, 1):.1f}" height="{h:.1f}" fill="#1f4e79">'
                         f'<title>{start + timedelta(days=i)}: {value}</title></rect>')
    parts.append(f'<text x="{left}" y="{height - 6}" font-size="11">{start}</text>')
    parts.append(f'<text x="{width}" y="{height - 6}" font-size="11" '
                 f'text-anchor="end">{until}</text>')
    parts.append("</svg>")
    return "".join(parts)


def when(value: str) -> str:
    """An instant as a reader files it: ``2026-11-24 03:21:46 UTC``."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_html(data: Mapping[str, Any]) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["when"] = when
    until = date.fromisoformat(str(data["generated_at"])[:10])
    svg = chart(data["hits"]["days"], until, int(data["hits"]["chart_days"]))
    return env.get_template("report.html").render(
        r=data, chart=Markup(svg), verdicts=VERDICTS)
