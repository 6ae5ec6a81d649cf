"""`blockd config show` and `blockd config check`: the one configuration, visible.

Operators run blockd beside Unbound and nginx and expect `unbound-checkconf` and
`nginx -T`: what is in force, where each value came from, and a file checked before a
reload.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import click

from blockd.cli.common import App, db_option, emit, json_option, pass_app
from blockd.cli.root import cli
from blockd.config import SYSTEM_CONFIG, load_config, load_policies


@cli.group("config")
def config_group() -> None:
    """Show the configuration in force, or check a file before using it."""


def _shown(value: Any) -> Any:
    """A value as a person writes it in blockd.toml."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        if len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int):
            host, port = value
            return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return [_shown(v) for v in value]
    if hasattr(value, "value"):  # enum members
        return value.value
    return value


def _keys() -> list[tuple[str, str, str, bool]]:
    """(section, key in the file, attribute, is it in [dns]) for every setting."""
    from blockd.config_schema import _ConfigFile

    out = []
    for section, table in _ConfigFile.model_fields.items():
        model = table.annotation
        assert model is not None
        for attribute, info in model.model_fields.items():
            out.append((section, info.alias or attribute, attribute, section == "dns"))
    return out


@config_group.command("show")
@db_option
@json_option
@pass_app
def show(app: App, db: str | None, as_json: bool) -> None:
    """Print the effective configuration and where each value came from: default, file,
    environment (BLOCKD_DB) or flag (--db)."""
    config = app.config
    path = config.source
    raw: dict[str, Any] = {}
    if path is not None:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    env_db = os.environ.get("BLOCKD_DB")
    rows = []
    for section, key, attribute, in_dns in _keys():
        holder: Any = config.dns if in_dns else config
        value = getattr(holder, attribute)
        source = "file" if key in raw.get(section, {}) else "default"
        if (section, key) == ("store", "db") and db:
            value, source = db, ("environment" if db == env_db else "flag")
        if (section, key) == ("store", "db"):  # a URL's password is not printed
            from blockd.store.engine import redact

            value = redact(str(value))
        rows.append({"key": f"{section}.{key}", "value": _shown(value), "source": source})
    where = (str(path) if path is not None else
             f"none ({SYSTEM_CONFIG} not present; built-in defaults)")
    dirs = [str(d) for d in config.policy_dirs]
    data = {"file": str(path) if path else None, "settings": rows, "policy_dirs": dirs,
            "state_dir": str(config.state_path())}
    width = max(len(r["key"]) for r in rows)

    def text() -> str:
        lines = [f"# configuration file: {where}"]
        for r in rows:
            lines.append(f"{r['key']:<{width}}  {_toml(r['value']):<30}  # {r['source']}")
        lines.append(f"# policies from: {', '.join(dirs)}")
        lines.append(f"# daemons' snapshots in: {data['state_dir']}")
        return "\n".join(lines)

    emit(as_json, data, text)


def _toml(value: Any) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def check(file: Path, as_json: bool) -> None:
    """Validate FILE (and the policy files it points at) without starting anything: exit
    0 if it is good, else 2 with one line naming the key and its line."""
    config = load_config(file)  # raises ConfigError: one line, exit 2
    policies = load_policies(config.policy_dirs)
    emit(as_json, {"file": str(file), "valid": True, "policies": sorted(policies)},
         f"{file}: ok ({len(policies)} enforcement policies: {', '.join(sorted(policies))})")

