"""The one configuration object, loaded from TOML, with typed defaults for the embedded run.

Unknown sections and keys are errors (``section.key: problem``): a misspelt key in an
enforcement appliance must not be silently ignored.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import re
import string
import sys
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from blockd.core.enforcement import (
    EDE_PLACEHOLDERS,
    Anonymisation,
    Deadline,
    DeadlineUnit,
    EnforcementPolicy,
    NftAction,
)
from blockd.core.model import Action, BlockdError
from blockd.core.names import normalise_name
from blockd.core.timeparse import zone

DEFAULT_DB = "var/blockd.db"
SYSTEM_CONFIG = Path("/etc/blockd/blockd.toml")


def default_policies_dir() -> Path:
    """The repository's policies/ (editable install), else the installed share dir."""
    here = Path(__file__).resolve().parent.parent / "policies"
    return here if here.is_dir() else Path(sys.prefix) / "share" / "blockd" / "policies"


class ConfigError(BlockdError):
    """A configuration problem: ``FILE: section.key: problem``."""


Address = tuple[str, int]


def parse_address_port(text: str, field: str, default_port: int = 53) -> Address:
    """``127.0.0.1:5353``, ``[::1]:5353``, ``::1`` or ``127.0.0.1`` (default port)."""
    raw = text.strip()
    host, port = raw, default_port
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{field}: {text!r} is not [ADDRESS]:PORT")
        if rest:
            port = _port(rest[1:], field, text)
    elif raw.count(":") == 1:
        host, _, p = raw.partition(":")
        port = _port(p, field, text)
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{field}: {text!r} is not an IP address with an optional port") from None
    return str(addr), port


def _port(text: str, field: str, whole: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ValueError(f"{field}: {whole!r} has a bad port")
    return int(text)


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """The resolver's knobs; defaults are safe for the embedded loopback run."""

    listen: tuple[Address, ...] = (("127.0.0.1", 5353),)
    upstream: tuple[Address, ...] = (("127.0.0.1", 53),)
    workers: int = 1
    allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    rate_limit: float = 500.0  # queries per second per client, UDP
    rate_burst: float = 1000.0
    cache_mb: int = 64
    upstream_timeout: float = 1.5
    tcp_idle_timeout: float = 10.0
    stale_for: float = 86400.0
    max_inflight: int = 2000
    metrics: Address | None = None  # Prometheus /metrics and /healthz, e.g. 127.0.0.1:9253


@dataclass(frozen=True, slots=True)
class Config:
    """Everything an operator may set. Flags and environment variables override the file."""

    db: str = DEFAULT_DB
    policies_dir: Path = field(default_factory=default_policies_dir)
    notice_ipv4: str | None = "127.0.0.1"
    notice_ipv6: str | None = None
    notice_url: str = "http://127.0.0.1:8080/"
    rpz_zone: str = "rpz.blockd."
    notice_listen: tuple[Address, ...] = (("127.0.0.1", 8080),)
    isp_name: str = "Your internet provider"
    isp_contact: str = ""
    transparency: bool = True
    tls_listen: Address | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    nft_local_output: bool = False
    dns: DnsSettings = field(default_factory=DnsSettings)
    hits_flush_interval: float = 5.0
    source: Path | None = None

    def with_db(self, db: str | None) -> Config:
        return self if not db else replace(self, db=db)


_CONFIG_SCHEMA: dict[str, dict[str, str]] = {
    "store": {"db": "db"},
    "policies": {"dir": "policies_dir"},
    "notice": {"ipv4": "notice_ipv4", "ipv6": "notice_ipv6", "url": "notice_url",
               "listen": "notice_listen", "isp_name": "isp_name", "isp_contact": "isp_contact",
               "transparency": "transparency", "tls_listen": "tls_listen",
               "tls_cert": "tls_cert", "tls_key": "tls_key"},
    "rpz": {"zone": "rpz_zone"},
    "dns": {f: f"dns.{f}" for f in (
        "listen", "upstream", "workers", "allow", "rate_limit", "rate_burst", "cache_mb",
        "upstream_timeout", "tcp_idle_timeout", "stale_for", "max_inflight", "metrics")},
    "hits": {"flush_interval": "hits_flush_interval"},
    "nft": {"local_output": "nft_local_output"},
}


def _dns_value(key: str, attr: str, value: Any) -> Any:
    name = attr.removeprefix("dns.")
    if name in ("listen", "upstream"):
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{key}: must be a non-empty list of \"ADDRESS:PORT\" strings")
        return tuple(parse_address_port(v, key) for v in value)
    if name == "metrics":
        if not isinstance(value, str):
            raise ValueError(f"{key}: must be an \"ADDRESS:PORT\" string")
        return None if value == "" else parse_address_port(value, key, 9253)
    if name == "allow":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{key}: must be a list of networks")
        try:
            return tuple(str(ipaddress.ip_network(v, strict=False)) for v in value)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    if name in ("workers", "cache_mb", "max_inflight"):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key}: must be a positive integer, got {value!r}")
        return value
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{key}: must be a positive number, got {value!r}")
    return float(value)


def _check(key: str, attr: str, value: Any, base: Path) -> Any:
    if attr.startswith("dns."):
        return _dns_value(key, attr, value)
    if attr == "hits_flush_interval":
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{key}: must be a positive number of seconds, got {value!r}")
        return float(value)
    if attr in ("transparency", "nft_local_output"):
        if not isinstance(value, bool):
            raise ValueError(f"{key}: must be true or false, got {value!r}")
        return value
    if attr == "notice_listen":
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{key}: must be a non-empty list of \"ADDRESS:PORT\" strings")
        return tuple(parse_address_port(v, key, 8080) for v in value)
    if not isinstance(value, str):
        raise ValueError(f"{key}: must be a string, got {value!r}")
    if attr == "tls_listen":
        return parse_address_port(value, key, 443)
    if attr in ("tls_cert", "tls_key"):
        path = Path(value)
        return path if path.is_absolute() else base / path
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
        if section not in _CONFIG_SCHEMA:
            raise ConfigError(f"{path}: {section}: unknown section")
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: {section}: must be a table")
        for key, value in body.items():
            attr = _CONFIG_SCHEMA[section].get(key)
            if attr is None:
                raise ConfigError(f"{path}: {section}.{key}: unknown key")
            try:
                values[attr] = _check(f"{section}.{key}", attr, value, path.parent)
            except ValueError as exc:
                raise ConfigError(f"{path}: {exc}") from None
    dns = {k.removeprefix("dns."): values.pop(k) for k in list(values) if k.startswith("dns.")}
    known = {f.name for f in fields(Config)}
    assert set(values) <= known
    return Config(source=path, dns=DnsSettings(**dns), **values)


# -- enforcement policies (policies/*.toml) ------------------------------------


class PolicyFileError(BlockdError):
    """``FILE: section.key: problem``."""


# section -> key -> (attribute, checker)
_NAME = re.compile(r"^[a-z0-9_-]+$")


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"must be a string, got {v!r}")
    return v


def _int_range(lo: int, hi: int) -> Any:
    def check(v: Any) -> int:
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ValueError(f"must be an integer between {lo} and {hi}, got {v!r}")
        return v
    return check


def _enum(cls: type[enum.StrEnum]) -> Any:
    def check(v: Any) -> Any:
        try:
            return cls(v)
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise ValueError(f"must be one of {choices}, got {v!r}") from None
    return check


def _jurisdiction(v: Any) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"[A-Z]{2}", v):
        raise ValueError(f"must be an ISO 3166 two-letter code in capitals, got {v!r}")
    return v


def _timezone(v: Any) -> str:
    try:
        zone(_str(v))
    except BlockdError:
        raise ValueError(f"unknown IANA time zone {v!r}") from None
    return str(v)


def _template(v: Any) -> str:
    if not isinstance(v, str) or not _NAME.match(v):
        raise ValueError(f"must be a template name of a-z, 0-9, _ and -, got {v!r}")
    return v


def _languages(v: Any) -> tuple[str, ...]:
    if (not isinstance(v, list) or not v
            or not all(isinstance(x, str) and re.fullmatch(r"[a-z]{2}", x) for x in v)):
        raise ValueError(f"must be a non-empty list of two-letter language codes, got {v!r}")
    return tuple(v)


def _ede_text(v: Any) -> str:
    text = _str(v)
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    except ValueError as exc:
        raise ValueError(f"bad braces in template ({exc})") from None
    unknown = fields - EDE_PLACEHOLDERS
    if unknown:
        allowed = ", ".join("{" + p + "}" for p in sorted(EDE_PLACEHOLDERS))
        raise ValueError(f"unknown placeholder {{{sorted(unknown)[0]}}} (allowed: {allowed})")
    if len(text.encode("utf-8")) > 300:
        raise ValueError("longer than 300 bytes (EDE text must fit a small DNS answer)")
    return text


_POLICY_SCHEMA: dict[str | None, dict[str, tuple[str, Any]]] = {
    None: {
        "description": ("description", _str),
        "jurisdiction": ("jurisdiction", _jurisdiction),
        "timezone": ("timezone", _timezone),
    },
    "dns": {
        "action": ("dns_action", _enum(Action)),
        "ttl": ("dns_ttl", _int_range(1, 86400)),
        "ede_text": ("ede_text", _ede_text),
    },
    "notice": {
        "template": ("notice_template", _template),
        "languages": ("languages", _languages),
    },
    "hits": {
        "retention_days": ("hit_retention_days", _int_range(1, 3650)),
        "client_anonymisation": ("client_anonymisation", _enum(Anonymisation)),
    },
    "nft": {
        "action": ("nft_action", _enum(NftAction)),
    },
    "deadline": {
        "amount": ("deadline_amount", _int_range(1, 100_000)),
        "unit": ("deadline_unit", _enum(DeadlineUnit)),
    },
}


def load_policy(path: Path) -> EnforcementPolicy:
    name = path.stem
    if not _NAME.match(name):
        raise PolicyFileError(f"{path}: file name must be a-z, 0-9, _ and - (.toml)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyFileError(f"{path}: cannot read ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyFileError(f"{path}: {exc}") from None
    values: dict[str, Any] = {}
    for key, value in data.items():
        section: str | None = None
        items: list[tuple[str, Any]] = [(key, value)]
        if isinstance(value, dict):
            if key not in _POLICY_SCHEMA:
                raise PolicyFileError(f"{path}: {key}: unknown section")
            section, items = key, list(value.items())
        for k, v in items:
            where = f"{section}.{k}" if section else k
            spec = _POLICY_SCHEMA[section].get(k)
            if spec is None:
                raise PolicyFileError(f"{path}: {where}: unknown key")
            attr, check = spec
            try:
                values[attr] = check(v)
            except ValueError as exc:
                raise PolicyFileError(f"{path}: {where}: {exc}") from None
    amount = values.pop("deadline_amount", None)
    unit = values.pop("deadline_unit", None)
    if (amount is None) != (unit is None):
        missing = "deadline.unit" if unit is None else "deadline.amount"
        raise PolicyFileError(f"{path}: {missing}: required when the other deadline key is set")
    deadline = Deadline(amount, unit) if amount is not None else None
    values.setdefault("notice_template", name)
    return EnforcementPolicy(name=name, deadline=deadline, **values)


def load_policies(directory: Path) -> dict[str, EnforcementPolicy]:
    """Every ``*.toml`` in ``directory``; ``default.toml`` must be among them."""
    if not directory.is_dir():
        raise PolicyFileError(f"{directory}: policies directory not found")
    policies = {p.stem: load_policy(p) for p in sorted(directory.glob("*.toml"))}
    if "default" not in policies:
        raise PolicyFileError(f"{directory}: default.toml is missing")
    return policies
