"""`blockd check`: is a name or address blocked, by which order and why; one subject, many,
or a stream of them on standard input (one answer per line)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from blockd.cli.common import App, _index_at, db_option, emit, json_option, now
from blockd.cli.root import cli
from blockd.core.enforcement import EnforcementPolicy, through_chain
from blockd.core.index import BlockIndex, Decision, IndexBuilder
from blockd.core.journal import JournalEntry
from blockd.core.model import InputError, Target, TargetKind
from blockd.core.names import parse_address, parse_target
from blockd.core.timeparse import iso, parse_instant, to_utc

if TYPE_CHECKING:
    from blockd.cli.app import AnyStore

# more subjects than this: build the whole index once instead of asking the store per name
WHOLE_INDEX_FROM = 20


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


def _cname_chain(app: App, name: str) -> tuple[str, ...]:
    """The CNAME targets of ``name`` as the configured upstream resolver answers them."""
    import asyncio

    from blockd.dns.chains import CnameChains
    from blockd.dns.upstream import Upstreams

    settings = app.config.dns

    async def ask() -> tuple[str, ...] | None:
        upstreams = Upstreams(settings.upstream, timeout=settings.upstream_timeout)
        return await CnameChains(upstreams).chain(name)

    chain = asyncio.run(ask())
    if chain is None:
        raise InputError("--resolve", "no upstream resolver answered "
                                      f"({', '.join(f'{h}:{p}' for h, p in settings.upstream)})")
    return chain


def subject_target(subject: str) -> Target:
    """What a subject names: one address, or a host name (IDN accepted)."""
    address = parse_address(subject, "NAME_OR_IP")
    if address is not None and address.kind is not TargetKind.IP:
        raise InputError("NAME_OR_IP", "give one address, not a prefix")
    return address or parse_target(subject.lstrip("=").removeprefix("*."), "NAME_OR_IP")


class Checker:
    """Decides subjects at one instant: from the journal replayed up to it (``--at``),
    from the whole index (many subjects), or from the orders that could cover each one."""

    def __init__(self, app: App, store: AnyStore, at: datetime, replay: bool, whole: bool
                 ) -> None:
        self.app, self.store, self.at = app, store, at
        self.relied: JournalEntry | None = None
        self.index: BlockIndex | None = None
        if replay:  # the journal as it stood then, not today's orders at an old date
            past = IndexBuilder(at, app.actions())
            for entry in store.journal():
                if to_utc(datetime.fromisoformat(entry.at)) > at:
                    break
                past.apply(entry)
                self.relied = entry
            self.index = past.index()
        elif whole:
            self.index = _index_at(app, store, at)

    def _covering(self, targets: list[Target]) -> BlockIndex:
        if self.index is not None:
            return self.index
        builder = IndexBuilder(self.at, self.app.actions())  # only orders that could cover
        for target in targets:
            for order, covered in self.store.candidates(target):
                builder.load(order, covered)
        return builder.index()

    def decide(self, target: Target, resolve: bool) -> tuple[Decision, str | None]:
        """The decision, and the alias it was blocked through (with ``resolve``)."""
        decision = self._covering([target]).decide(target.value)
        if not resolve or decision.blocked or target.kind is not TargetKind.DOMAIN:
            return decision, None
        chain = _cname_chain(self.app, target.value)
        index = self._covering([parse_target(alias, "NAME_OR_IP") for alias in chain])
        through = through_chain(index, chain, self.app.policies)
        if through is None:
            return decision, None
        return replace(through[1], subject=decision.subject), through[0]

    def cite(self) -> dict[str, Any]:
        relied = self.relied
        return {"seq": relied.seq if relied else 0, "hash": relied.hash if relied else None,
                "at": relied.at if relied else None}


@cli.command()
@click.argument("subjects", nargs=-1, required=True, metavar="NAME_OR_IP...")
@click.option("--at", "at_text", metavar="WHEN",
              help="What was enforced at this instant (UTC unless WHEN has an offset; HH:MM "
                   "is today): the journal is replayed as it stood then, and the answer "
                   "cites the last entry it relied on [default: now, from the tables].")
@click.option("--resolve", is_flag=True,
              help="Also ask the configured upstream resolver ([dns] upstream) for the "
                   "name's CNAME chain: a name aliased to a blocked name is blocked by the "
                   "resolver too, unless the order's policy sets block_cname_chains = false.")
@db_option
@json_option
@click.pass_context
def check(ctx: click.Context, subjects: tuple[str, ...], at_text: str | None, resolve: bool,
          db: str | None, as_json: bool) -> None:
    """Say whether names or addresses are blocked, by which order(s) and why.

    With one NAME_OR_IP, the orders and targets that block it. With several, or `-` to
    read them from standard input (one per line), one line per subject (`--json`: one JSON
    object per line), answered from one index built once. Exit status: 0 blocked (with
    several: any), 1 not blocked, 2 error (with several: any subject that is not a name
    or an address, reported on its line; the others are still answered).
    """
    app: App = ctx.obj
    at = parse_instant(at_text, "--at", now=now()) if at_text is not None else now()
    if len(subjects) == 1 and subjects[0] != "-":
        target = subject_target(subjects[0])
        checker = Checker(app, app.quick_store(db), at, at_text is not None, whole=False)
        decision, via = checker.decide(target, resolve)
        ctx.exit(_one(app, checker, decision, via, at if at_text else None, as_json))
    stream = _stdin_subjects() if subjects == ("-",) else iter(subjects)
    checker = Checker(app, app.quick_store(db), at, at_text is not None, whole=True)
    any_blocked = any_error = False
    out = sys.stdout
    for subject in stream:
        try:
            decision, via = checker.decide(subject_target(subject), resolve)
        except InputError as exc:
            any_error = True
            out.write(json.dumps({"subject": subject, "error": str(exc)}, ensure_ascii=False)
                      + "\n" if as_json else f"{_safe(subject)}: error: {exc}\n")
            continue
        any_blocked = any_blocked or decision.blocked
        if as_json:
            data = _decision_dict(decision, app.policies)
            if via is not None:
                data["through_cname"] = via
            out.write(json.dumps(data, ensure_ascii=False) + "\n")
        elif decision.blocked:
            first = decision.matches[0]
            through = f" through a CNAME to {via}" if via else ""
            out.write(f"{decision.subject}: BLOCKED ({decision.action}){through} by "
                      f"{first.order.reference} via {first.target.spec}\n")
        else:
            out.write(f"{decision.subject}: not blocked\n")
    if at_text is not None and not as_json:
        cite = checker.cite()
        click.echo(f"(at {iso(at)}, from the journal up to seq {cite['seq']})", err=True)
    ctx.exit(2 if any_error else 0 if any_blocked else 1)


def _one(app: App, checker: Checker, decision: Decision, via: str | None,
         at: datetime | None, as_json: bool) -> int:
    data = _decision_dict(decision, app.policies)
    if via is not None:
        data["through_cname"] = via
    cite = ""
    if at is not None:
        relied = checker.relied
        data["at"] = iso(at)
        data["journal"] = checker.cite()
        cite = (f" (at {iso(at)}, from the journal up to seq {relied.seq}, hash "
                f"{relied.hash[:16]}...)" if relied else
                f" (at {iso(at)}: the journal holds no entry yet)")

    def text() -> str:
        if not decision.blocked:
            return f"{decision.subject}: not blocked{cite}"
        through = f" through a CNAME to {via}" if via is not None else ""
        lines = [f"{decision.subject}: BLOCKED ({decision.action}){through}{cite}"]
        lines += [f"  order {m.order.reference} of {m.order.authority} "
                  f"via {m.target.spec} -> {m.action}" for m in decision.matches]
        return "\n".join(lines)

    emit(as_json, data, text)
    return 0 if decision.blocked else 1


def _stdin_subjects() -> Iterator[str]:
    """Names on standard input, one per line; blank lines and `#` comments skipped."""
    for line in sys.stdin:
        subject = line.split("#", 1)[0].strip()
        if subject:
            yield subject


def _safe(text: str) -> str:
    """A subject echoed back on its line: control characters escaped."""
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
