"""The one configuration object, loaded from TOML, with typed defaults for the embedded run.

Unknown sections and keys are errors (``section.key: problem``): a misspelt key in an
enforcement appliance must not be silently ignored.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from blockd.core.model import BlockdError
from blockd.core.names import normalise_name
from blockd.enforcement import default_policies_dir

DEFAULT_DB = "var/blockd.db"
SYSTEM_CONFIG = Path("/etc/blockd/blockd.toml")


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


_SCHEMA: dict[str, dict[str, str]] = {
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
    dns = {k.removeprefix("dns."): values.pop(k) for k in list(values) if k.startswith("dns.")}
    known = {f.name for f in fields(Config)}
    assert set(values) <= known
    return Config(source=path, dns=DnsSettings(**dns), **values)
