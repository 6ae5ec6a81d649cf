"""`blockd report`: an order's compliance record (HTML to file or print, or JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from blockd.cli.common import App, _reference, db_option, now, pass_app, write_output
from blockd.cli.root import cli


@cli.command()
@click.argument("reference")
@click.option("--format", "fmt", type=click.Choice(["html", "json"]), default="html",
              show_default=True, help="A printable HTML document, or its data as JSON.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file (atomically) [default: standard output].")
@db_option
@pass_app
def report(app: App, reference: str, fmt: str, output: Path | None, db: str | None) -> None:
    """A self-contained compliance report for order REFERENCE.

    The order as amended, its targets and their history with each journal entry's hash
    and the journal head (check it later with `blockd audit verify --anchor`), when each
    channel put it into force against the policy's deadline, hits per day as a chart,
    and the last `blockd verify` result. The HTML needs no network and no script, and
    prints on A4.
    """
    from blockd.cli.progress import Steps
    from blockd.report import STEPS, build, render_html

    with Steps("report", STEPS) as steps:
        data = build(app.store(db), _reference(reference), app.policies, now(), steps.step)
    content = json.dumps(data, indent=2, ensure_ascii=False) + "\n" if fmt == "json" \
        else render_html(data)
    if output is None:
        click.echo(content, nl=False)
        return
    write_output(output, content)
    click.echo(f"wrote the report for {data['order']['reference']} to {output}", err=True)
