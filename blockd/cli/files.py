"""Blocklist files: `import` into an order and `export` of what is in force."""

from __future__ import annotations

from pathlib import Path

import click

from blockd.cli.common import (
    App,
    _index_at,
    _reference,
    _targets,
    actor_option,
    db_option,
    default_actor,
    emit,
    force_options,
    input_lines,
    json_option,
    now,
    pass_app,
    read_input,
    write_output,
)
from blockd.cli.progress import Progress
from blockd.cli.root import cli
from blockd.core.model import (
    InputError,
)
from blockd.core.names import parse_target
from blockd.core.timeparse import parse_instant
from blockd.formats import FORMATS, ExportEntry, FormatError, plainlist


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
    size = file.stat().st_size if str(file) != "-" and file.is_file() else 0
    try:
        if fmt == "list":  # line by line: the text of a million names is never held
            with Progress("reading", size) as reading:
                parsed_targets = plainlist.parse_lines(input_lines(file, reading.update))
        else:
            parsed_targets = FORMATS[fmt].parse(_decoded(file))
    except FormatError as exc:  # field is "line N"
        raise InputError(str(file), f"{exc.field}: {exc.reason}") from None
    targets, forced, collateral = _targets(app, parsed_targets, force, justification,
                                           field=str(file), unique=True)
    del parsed_targets
    store = app.store(db)
    if dry_run:
        store.get_order(ref, with_targets=False)
        emit(as_json, {"reference": ref, "parsed": len(targets), "dry_run": True},
             f"{file}: {len(targets)} valid target(s) for order {ref}; nothing written")
        return
    with Progress("writing", len(targets)) as writing:  # one transaction: Ctrl-C keeps none
        added, already = store.add_targets(ref, targets, actor=default_actor(actor), at=now(),
                                           forced=forced, collateral=collateral, unique=True,
                                           progress=writing.update)
    emit(as_json, {"reference": ref, "added": len(added), "already": len(already)},
         f"order {ref}: imported {len(added)} target(s) from {file}"
         + (f", {len(already)} already present" if already else ""))


def _decoded(file: Path) -> str:
    raw = read_input(file)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError("FILE", f"{file} is not UTF-8 (byte {exc.start})") from None


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
    at = parse_instant(at_text, "--at") if at_text is not None else now()
    origin = app.config.rpz_zone if zone is None else (
        parse_target(zone.rstrip("."), "--zone").value + ".")
    store = app.store(db)
    head = store.head()
    policy = _index_at(app, store, at, progress=True)
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
            seq=head.seq if head else 0, head_hash=head.hash if head else None,
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
    write_output(output, content)
    click.echo(f"wrote {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} to {output}",
               err=True)
