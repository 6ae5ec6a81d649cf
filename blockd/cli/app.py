"""What every command needs and what `blockd --help` may load: the lazily loaded app
state and the common options. Nothing heavy is imported here (no store, no configuration
models): those load when a command first asks for them."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from blockd.config import Config
    from blockd.core.enforcement import EnforcementPolicy
    from blockd.core.guard import Guard
    from blockd.store.lite import LiteStore
    from blockd.store.store import Store

    AnyStore = Store | LiteStore

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 2
OPENED: list[Store] = []  # closed when the command ends (root.main): a PostgreSQL
# connection left to the garbage collector stays open on the server until then


@dataclass
class App:
    """What every command needs, loaded lazily so `--help` never touches the disk."""

    config_path: Path | None

    @cached_property
    def config(self) -> Config:
        from blockd.config import load_config

        return load_config(self.config_path)

    @cached_property
    def policies(self) -> dict[str, EnforcementPolicy]:
        from blockd.config import load_policies

        return load_policies(self.config.policy_dirs)

    @cached_property
    def guard(self) -> Guard:
        from blockd.core.guard import load_guard

        return load_guard(self.config.policy_dirs)

    def store(self, db: str | None, *, create: bool = False) -> Store:
        from blockd.core.model import InputError
        from blockd.store.store import Store

        if db is not None and not db.strip():
            raise InputError("--db", "must not be empty")
        store = Store.open(db or self.config.db, create=create)
        OPENED.append(store)
        return store

    def quick_store(self, db: str | None) -> Store | LiteStore:
        """The store for the quick commands (`check`, `status`, `order show`, `order
        target add`): a SQLite file through the standard library's driver, so the command
        does not wait for SQLAlchemy to import; any other store through ``Store``."""
        from blockd.core.model import InputError
        from blockd.store.lite import open_quick

        if db is not None and not db.strip():
            raise InputError("--db", "must not be empty")
        store = open_quick(db or self.config.db)
        if store is None:
            return self.store(db)
        context = click.get_current_context(silent=True)
        if context is not None:  # closed when the command ends (in-process runs too)
            context.call_on_close(store.close)
        return store

    def policy_named(self, name: str) -> EnforcementPolicy:
        from blockd.core.model import InputError

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


def emit(as_json: bool, data: Any, text: str | Callable[[], str]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    else:
        click.echo(text() if callable(text) else text)


def now() -> datetime:
    return datetime.now(UTC)
