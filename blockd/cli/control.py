"""Control verbs for running daemons, through their control sockets in the state directory
(daemon/control.py): `blockd reload`, `blockd cache flush [NAME]`, `blockd tail`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from blockd.cli.app import App, db_option, emit, json_option, pass_app
from blockd.cli.root import cli
from blockd.core.model import InputError

TIMEOUT = 10.0


def _sockets(app: App, db: str | None, kinds: tuple[str, ...]) -> list[Path]:
    state = app.config.with_db(db).state_path() if db else app.config.state_path()
    found = sorted(p for p in state.glob("*.sock") if p.name.split(".", 1)[0] in kinds)
    if not found:
        raise InputError("daemons", f"no running {'/'.join(kinds)} daemon has a control "
                                    f"socket in {state}")
    return found


async def _ask(path: Path, request: dict[str, Any]) -> dict[str, Any]:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)),
                                                TIMEOUT)
    except (OSError, TimeoutError) as exc:
        return {"instance": path.stem, "ok": False, "error": f"not reachable ({exc})"}
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        answer: dict[str, Any] = json.loads(line)
        return answer
    except (OSError, TimeoutError, ValueError) as exc:
        return {"instance": path.stem, "ok": False, "error": f"no answer ({exc})"}
    finally:
        writer.close()


def _all(paths: list[Path], request: dict[str, Any]) -> list[dict[str, Any]]:
    async def every() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(_ask(p, request) for p in paths)))
    return asyncio.run(every())


@cli.command()
@db_option
@json_option
@pass_app
def reload(app: App, db: str | None, as_json: bool) -> None:
    """Make the running daemons re-read the configuration and the policies (as SIGHUP
    does), and say how each went.

    Exit 1 if one kept its old configuration (a broken file: the log says why)."""
    answers = _all(_sockets(app, db, ("dns", "http", "nft")), {"cmd": "reload"})
    emit(as_json, answers, lambda: "\n".join(
        f"{a['instance']}: reloaded (journal seq {a['seq']})" if a.get("ok")
        else f"{a['instance']}: NOT reloaded: {a.get('error')}" for a in answers))
    if not all(a.get("ok") for a in answers):
        raise click.exceptions.Exit(1)


@cli.group()
def cache() -> None:
    """The DNS daemons' answer caches."""


@cache.command("flush")
@click.argument("name", required=False)
@db_option
@json_option
@pass_app
def cache_flush(app: App, name: str | None, db: str | None, as_json: bool) -> None:
    """Forget the cached answers of NAME (every type), or of every name, in each running
    DNS daemon (every worker); the next query goes upstream."""
    from blockd.core.names import normalise_name

    wanted = normalise_name(name, "NAME") if name is not None else None
    answers = _all(_sockets(app, db, ("dns",)), {"cmd": "cache-flush", "name": wanted})
    emit(as_json, answers, lambda: "\n".join(
        f"{a['instance']}: {a['removed']} cached answer(s) of "
        f"{wanted or 'every name'} dropped" if a.get("ok")
        else f"{a['instance']}: NOT flushed: {a.get('error')}" for a in answers))
    if not all(a.get("ok") for a in answers):
        raise click.exceptions.Exit(1)


@cli.command()
@click.option("--count", type=click.IntRange(min=1), metavar="N",
              help="Stop after N lines [default: until interrupted].")
@db_option
@json_option
@pass_app
def tail(app: App, count: int | None, db: str | None, as_json: bool) -> None:
    """A live line per blocked answer, notice served and packet count read (like
    `pihole -t`): time, daemon, channel, order and target.

    No subscriber address is ever shown. Ctrl-C ends it."""
    paths = _sockets(app, db, ("dns", "http", "nft"))

    async def follow() -> None:
        lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        tasks = [asyncio.ensure_future(_follow(p, lines)) for p in paths]
        seen = 0
        try:
            while count is None or seen < count:
                item = await lines.get()
                if "error" in item:
                    click.echo(f"blockd: warning: {item['instance']}: {item['error']}",
                               err=True)
                    continue
                seen += 1
                sys.stdout.write(json.dumps(item) + "\n" if as_json else
                                 f"{item['at']} {item['instance']:<7} {item['channel']:<4} "
                                 f"{item['order']} {item['target']}"
                                 + (f" x{item['count']}" if item["count"] != 1 else "")
                                 + "\n")
                sys.stdout.flush()
        finally:
            for task in tasks:
                task.cancel()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(follow())


async def _follow(path: Path, out: asyncio.Queue[dict[str, Any]]) -> None:
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
    except OSError as exc:
        await out.put({"instance": path.stem, "error": f"not reachable ({exc})"})
        return
    try:
        writer.write(b'{"cmd": "tail"}\n')
        await writer.drain()
        await reader.readline()  # the greeting
        while line := await reader.readline():
            await out.put(json.loads(line))
    finally:
        writer.close()
