"""The one configuration object, loaded from TOML, with typed defaults for the embedded run.

Unknown sections and keys are errors (``section.key: problem``): a misspelt key in an
enforcement appliance must not be silently ignored.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from blockd.core.model import BlockdError
from blockd.core.names import normalise_name

DEFAULT_DB = "var/blockd.db"
SYSTEM_CONFIG = Path("/etc/blockd/blockd.toml")


class ConfigError(BlockdError):
    """A configuration problem: ``FILE: section.key: problem``."""


def _repo_policies() -> Path:
    here = Path(__file__).resolve().parent.parent / "policies"
    return here if here.is_dir() else Path(sys.prefix) / "share" / "blockd" / "policies"


@dataclass(frozen=True, slots=True)
class Config:
    """Everything an operator may set. Flags and environment variables override the file."""

    db: str = DEFAULT_DB
    policies_dir: Path = field(default_factory=_repo_policies)
    notice_ipv4: str | None = "127.0.0.1"
    notice_ipv6: str | None = None
    notice_url: str = "http://127.0.0.1:8080/"
    rpz_zone: str = "rpz.blockd."
    source: Path | None = None

    def with_db(self, db: str | None) -> Config:
        return self if not db else replace(self, db=db)


_SCHEMA: dict[str, dict[str, str]] = {
    "store": {"db": "db"},
    "policies": {"dir": "policies_dir"},
    "notice": {"ipv4": "notice_ipv4", "ipv6": "notice_ipv6", "url": "notice_url"},
    "rpz": {"zone": "rpz_zone"},
}


def _check(key: str, attr: str, value: Any, base: Path) -> Any:
    if not isinstance(value, str):
        raise ValueError(f"{key}: must be a string, got {value!r}")
    if attr == "policies_dir":
        path = Path(value)
        return path if path.is_absolute() else base / path
    if attr in ("notice_ipv4", "notice_ipv6"):
        if value == "":
            return None
        version = 4 if attr == "notice_ipv4" else 6
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{key}: {value!r} is not an IP address") from None
        if addr.version != version:
            raise ValueError(f"{key}: {value!r} is not an IPv{version} address")
        return str(addr)
    if attr == "rpz_zone":
        try:
            return normalise_name(value, key) + "."
        except BlockdError as exc:
            raise ValueError(str(exc)) from None
    if attr == "notice_url" and not value.startswith(("http://", "https://")):
        raise ValueError(f"{key}: {value!r} is not an http(s) URL")
    return value


def load_config(path: Path | None = None) -> Config:
    """Load ``path``, else ``$BLOCKD_CONFIG``, else /etc/blockd/blockd.toml if present."""
    if path is None:
        env = os.environ.get("BLOCKD_CONFIG")
        if env:
            path = Path(env)
        elif SYSTEM_CONFIG.is_file():
            path = SYSTEM_CONFIG
        else:
            return Config()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    values: dict[str, Any] = {}
    for section, body in data.items():
        if section not in _SCHEMA:
            raise ConfigError(f"{path}: {section}: unknown section")
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: {section}: must be a table")
        for key, value in body.items():
            attr = _SCHEMA[section].get(key)
            if attr is None:
                raise ConfigError(f"{path}: {section}.{key}: unknown key")
            try:
                values[attr] = _check(f"{section}.{key}", attr, value, path.parent)
            except ValueError as exc:
                raise ConfigError(f"{path}: {exc}") from None
    known = {f.name for f in fields(Config)}
    assert set(values) <= known
    return Config(source=path, **values)
