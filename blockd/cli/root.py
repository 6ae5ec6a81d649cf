"""The `blockd` group, `init`, `status`, and the entry point with one-line errors."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from blockd import __version__
from blockd.cli.app import EXIT_ERROR, App, db_option, emit, json_option, now, pass_app
from blockd.core.model import BlockdError, InputError, Status

# Commands load their module only when run (or listed by name): `blockd --help` and a
# command's own run never import the store, the daemons or the other commands. The short
# help is kept here so the list needs no import; a test keeps it equal to each docstring.
LAZY: dict[str, tuple[str, str]] = {
    "audit": ("blockd.cli.audit", "Read and verify the hash-chained journal of every change."),
    "cache": ("blockd.cli.control", "The DNS daemons' answer caches."),
    "check": ("blockd.cli.check",
              "Say whether names or addresses are blocked, by which order(s) and why."),
    "config": ("blockd.cli.config",
               "Show the configuration in force, or check a file before using it."),
    "export": ("blockd.cli.files",
               "Export the targets of orders in force (RPZ loads into BIND, Unbound, PowerDNS)."),
    "guard": ("blockd.cli.guard",
              "The overblocking guard's lists (protected names, networks and providers)."),
    "hits": ("blockd.cli.hits",
             "Blocked answers, notices and packets per order, target, day or channel."),
    "import": ("blockd.cli.files",
               "Add the targets in FILE to an order. All or nothing: one bad line imports none."),
    "nft": ("blockd.cli.nft",
            "Put address and prefix orders into the kernel's nftables (table inet blockd)."),
    "order": ("blockd.cli.orders", "Add, inspect, change, suspend, resume and lift court orders."),
    "reload": ("blockd.cli.control",
               "Make the running daemons re-read the configuration and the policies (as "
               "SIGHUP does), and say how each went."),
    "report": ("blockd.cli.report", "A self-contained compliance report for order REFERENCE."),
    "rpz": ("blockd.cli.rpz", "The RPZ primary's secondaries: what each last fetched."),
    "serve": ("blockd.cli.serve", "Run a daemon in the foreground (systemd runs these)."),
    "store": ("blockd.cli.store",
              "Back up, restore, adopt and check the order store (safe while daemons run)."),
    "tail": ("blockd.cli.control",
             "A live line per blocked answer, notice served and packet count read (like "
             "`pihole -t`): time, daemon, channel, order and target."),
    "verify": ("blockd.cli.verify",
               "Prove that the running services enforce the orders in force (all, or REFs)."),
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (see LAZY)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in LAZY:
            importlib.import_module(LAZY[cmd_name][0])  # its decorators register it here
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from LAZY's short help, without importing the commands."""
        rows = []
        limit = formatter.width - 6 - max(len(name) for name in self.list_commands(ctx))
        for name in self.list_commands(ctx):
            if name in LAZY:
                text = LAZY[name][1]
            else:
                command = self.commands[name]
                if command.hidden:
                    continue
                text = command.get_short_help_str(limit)
            rows.append((name, text))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


# -- commands -----------------------------------------------------------------------------


@click.group(cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
    from blockd.store.engine import database_url

    _, path = database_url(db or app.config.db)
    if path is not None and not path.exists():
        stale = [p for p in (Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]
        if stale:  # SQLite would replay another database's WAL into the new file
            raise InputError("--db", f"{stale[0]} is left from a removed database; move "
                             "it away before creating a new store here")
    store = app.store(db, create=True)
    before, after = store.init()
    state = "created" if before == 0 else "up to date" if before == after else "upgraded"
    emit(as_json, {"database": store.where, "schema": after, "state": state},
         f"{store.where}: schema v{after} ({state})")


@cli.command()
@db_option
@json_option
@pass_app
def status(app: App, db: str | None, as_json: bool) -> int:
    """Summarise the store: orders by status, orders in force, targets, journal head, and
    the daemons' snapshots of the policy they enforce. Exit 1 if the store is damaged."""
    from blockd.store.engine import StoreDamaged

    try:
        store = app.quick_store(db)
        stats = store.stats()
        damage = store.quick_check(5.0)
    except StoreDamaged as exc:
        damage = [str(exc)]
    if damage:
        from blockd.cli.store import RESTORE_HELP

        emit(as_json, {"store": "damaged", "problems": damage[:20], "recover": RESTORE_HELP,
                       "daemons": _daemons(app, None, db)},
             lambda: "\n".join([f"Store:     damaged: {damage[0]}", f"To recover: {RESTORE_HELP}.",
                                *_daemon_lines(_daemons(app, None, db))]))
        return 1
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
        "store": "ok",
        "daemons": _daemons(app, store, db),
    }
    orders = ", ".join(f"{n} {s}" for s, n in data["orders"].items())
    emit(as_json, data, "\n".join([
        f"Database:  {data['database']} (schema v{data['schema']})",
        f"Orders:    {orders}; {data['in_force']} in force",
        f"Targets:   {data['targets']} ({data['targets_in_force']} in force)",
        f"Journal:   {stats['journal_entries']} entries, head "
        f"{data['journal']['head_seq']} {(head.hash[:16] + '...') if head else '-'}",
        f"Policies:  {', '.join(data['policies'])}",
        *_daemon_lines(data["daemons"]),
    ]))
    return 0


def _daemons(app: App, store: Any, db: str | None) -> list[dict[str, Any]]:
    """The snapshots daemons keep in the state directory, and whether the store's journal
    continues each (a daemon refuses a store that does not)."""
    from blockd.store.snapshot import SnapshotInfo, snapshots

    out: list[dict[str, Any]] = []
    for item in snapshots(app.config.with_db(db).state_path()):
        if not isinstance(item, SnapshotInfo):
            out.append({"snapshot": str(item), "state": "unreadable snapshot"})
            continue
        row: dict[str, Any] = {"instance": item.instance, "seq": item.seq, "hash": item.hash,
                               "written_at": item.written_at, "targets": item.targets}
        if store is None:
            row["state"] = "store damaged: serving this snapshot"
        else:
            row["state"] = "ok" if store.continues(item.seq, item.hash) else \
                "refused: the store does not continue it; run `blockd store adopt`"
        out.append(row)
    return out


def _daemon_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in rows:
        if "instance" in r:
            lines.append(f"Daemon:    {r['instance']}: seq {r['seq']} "
                         f"({(r['hash'] or '-')[:16]}), written {r['written_at']}: {r['state']}")
        else:
            lines.append(f"Daemon:    {r['snapshot']}")
    return lines



def _not_text(args: Sequence[str]) -> str | None:
    """The field holding bytes that are not UTF-8 (the shell passes them through as
    surrogates, which no store, journal hash or log line can hold), or None."""
    for i, arg in enumerate(args):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            if arg.startswith("--") and "=" in arg:
                return arg.split("=", 1)[0]
            if i > 0 and args[i - 1].startswith("-"):
                return args[i - 1]
            return f"argument {i + 1}"
    for name, value in os.environ.items():
        if name.startswith("BLOCKD_"):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return name
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: one-line errors, never a traceback for a known failure."""
    args = list(argv) if argv is not None else sys.argv[1:]
    field = _not_text(args)
    if field is not None:
        click.echo(f"blockd: error: {field}: is not valid UTF-8 text", err=True)
        return EXIT_ERROR
    try:
        result = cli.main(args=args,
                          prog_name="blockd", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        return EXIT_ERROR
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        click.echo(f"blockd: error: {exc.format_message()}{hint}", err=True)
        return EXIT_ERROR
    except click.Abort:  # click's name for Ctrl-C (KeyboardInterrupt) during a command
        click.echo("blockd: interrupted (a change is written whole or not at all)", err=True)
        return 130
    except (BlockdError, click.ClickException) as exc:
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        click.echo(f"blockd: error: {message}".replace("\n", " "), err=True)
        return EXIT_ERROR
    except KeyboardInterrupt:  # every write is one transaction: nothing was half done
        click.echo("blockd: interrupted (a change is written whole or not at all)", err=True)
        return 130
    finally:
        _close_stores()
    return result if isinstance(result, int) else 0


def _close_stores() -> None:
    """Close the stores the command opened (closing twice is harmless)."""
    from blockd.cli.app import OPENED

    while OPENED:
        OPENED.pop().close()
