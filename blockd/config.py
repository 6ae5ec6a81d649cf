"""The one configuration object, loaded from TOML, with typed defaults for the embedded run.

Each file (blockd.toml, policies/*.toml) is declared once as strict pydantic models in
``blockd.config_schema``; a mistake is reported on one line as ``FILE: section.key:
problem``, and unknown sections and keys are errors: a misspelt key in an enforcement
appliance must not be silently ignored. The rest of blockd sees plain frozen dataclasses
(``Config``, ``DnsSettings``, ``EnforcementPolicy``), whose defaults are also the files'
defaults. What a file validated into is remembered (``blockd.configmemo``), so a command
that reads an unchanged file does not pay for building the schemas.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from blockd.core.enforcement import EnforcementPolicy
from blockd.core.model import BlockdError

DEFAULT_DB = "var/blockd.db"
SYSTEM_CONFIG = Path("/etc/blockd/blockd.toml")


def default_policies_dir() -> Path:
    """The policies, protected lists and notice templates shipped inside the package (the
    repository's top-level ``policies/`` points here)."""
    return Path(__file__).resolve().parent / "policies"


class ConfigError(BlockdError):
    """A configuration problem: ``FILE: section.key: problem``."""


class PolicyFileError(BlockdError):
    """A policy file problem: ``FILE: section.key: problem``."""


Address = tuple[str, int]


def parse_address_port(text: str, field: str, default_port: int = 53) -> Address:
    """``127.0.0.1:5353``, ``[::1]:5353``, ``::1`` or ``127.0.0.1`` (default port)."""
    try:
        return _address(text, default_port)
    except ValueError as exc:
        raise ValueError(f"{field}: {exc}") from None


def _address(text: str, default_port: int) -> Address:
    raw = text.strip()
    host, port = raw, str(default_port)
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not [ADDRESS]:PORT")
        port = rest[1:] or port
    elif raw.count(":") == 1:
        host, _, port = raw.partition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} has a bad port")
    try:
        return str(ipaddress.ip_address(host)), int(port)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address with an optional port") from None


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """The resolver's knobs; defaults are safe for the embedded loopback run."""

    listen: tuple[Address, ...] = (("127.0.0.1", 5353),)
    upstream: tuple[Address, ...] = (("127.0.0.1", 53),)
    workers: int = 1
    allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    # queries per second per client address over UDP; above it the answer is an empty TC=1
    # (the client retries over TCP), so a busy NAT address is slowed, never cut off
    rate_limit: float = 5000.0
    rate_burst: float = 10000.0
    cache_mb: int = 64
    # the replay memo and the blocked answers' tails, in MB (see dns/service.py): what a
    # query asked again costs is one lookup; names asked once only fill it
    memo_mb: int = 16
    upstream_timeout: float = 1.5
    tcp_idle_timeout: float = 10.0
    stale_for: float = 86400.0
    cache_max_ttl: int = 86400  # seconds a cached answer is kept at most (Unbound's default)
    cache_max_negative_ttl: int = 3600  # the same for NXDOMAIN/NODATA (RFC 2308 5)
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
    # `blockd serve rpz`: where the primary answers (UDP and TCP), the secondaries it
    # sends NOTIFY to, who may transfer the zone, and the TSIG key file (tsig-keygen's)
    rpz_listen: tuple[Address, ...] = (("127.0.0.1", 5354),)
    rpz_notify: tuple[Address, ...] = ()
    rpz_allow_transfer: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    rpz_tsig_key: Path | None = None
    rpz_metrics: Address | None = None  # its /metrics and /healthz (9256 if no port given)
    notice_listen: tuple[Address, ...] = (("127.0.0.1", 8080),)
    isp_name: str = "Your internet provider"
    isp_contact: str = ""
    transparency: bool = True
    notice_resolve_cnames: bool = True  # a Host blocked only through a CNAME gets its notice
    tls_listen: Address | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Prometheus /metrics and /healthz of `serve http` and `serve nft` (off by default, as
    # [dns] metrics: each daemon needs a port of its own; ports 9254, 9255 if none given)
    notice_metrics: Address | None = None
    nft_local_output: bool = False
    nft_metrics: Address | None = None
    dns: DnsSettings = field(default_factory=DnsSettings)
    # seconds between hit writes: a flush of 100k new buckets takes about 2 s of the
    # process (a resolver thread holding the GIL), so it is not done every few seconds;
    # a stopping daemon writes what it counted
    hits_flush_interval: float = 30.0
    state_dir: Path | None = None  # snapshots of the policy in force; see state_path()
    store_check_interval: float = 300.0  # seconds between integrity checks of the store
    log_level: str = "info"  # debug, info, warning or error (daemons' stderr)
    source: Path | None = None

    def with_db(self, db: str | None) -> Config:
        return self if not db else replace(self, db=db)

    @property
    def policy_dirs(self) -> tuple[Path, ...]:
        """Where policy files are looked up, first match wins: the configured directory
        (``[policies] dir``) overrides the shipped policies file by file."""
        shipped = default_policies_dir()
        if self.policies_dir.resolve() == shipped:
            return (shipped,)
        return (self.policies_dir, shipped)

    def state_path(self) -> Path:
        """Where daemons keep the last good policy: ``state_dir``, else a directory
        beside the SQLite file (``blockd.db-state``), else ``var/state``. Beside the
        file by default so that two stores never share one daemon's snapshots."""
        if self.state_dir is not None:
            return self.state_dir
        from blockd.store.engine import database_url  # the store's URL rules, one place

        _, path = database_url(self.db)
        return path.with_name(path.name + "-state") if path is not None else Path("var/state")


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
    from blockd import configmemo

    def validate(data: dict[str, Any]) -> Config:
        from blockd.config_schema import validate_config

        return validate_config(path, data)

    return configmemo.load(path, Config, ConfigError, validate)


_NAME = r"^[a-z0-9_-]+$"


def load_policy(path: Path) -> EnforcementPolicy:
    """One policy file; its name is the file's stem."""
    if not re.match(_NAME, path.stem):
        raise PolicyFileError(f"{path}: file name must be a-z, 0-9, _ and - (.toml)")
    from blockd import configmemo

    def validate(data: dict[str, Any]) -> EnforcementPolicy:
        from blockd.config_schema import validate_policy

        return validate_policy(path, data)

    return configmemo.load(path, EnforcementPolicy, PolicyFileError, validate)


def load_policies(directories: Path | tuple[Path, ...]) -> dict[str, EnforcementPolicy]:
    """Every ``*.toml`` of the directories, a file of an earlier one overriding the file of
    the same name in a later one; ``default.toml`` must be among them."""
    layers = (directories,) if isinstance(directories, Path) else directories
    files: dict[str, Path] = {}
    for directory in reversed(layers):
        if not directory.is_dir():
            raise PolicyFileError(f"{directory}: policies directory not found")
        files.update({p.name: p for p in directory.glob("*.toml")})
    policies = {files[n].stem: load_policy(files[n]) for n in sorted(files)}
    if "default" not in policies:
        raise PolicyFileError(f"{layers[0]}: default.toml is missing")
    return policies
