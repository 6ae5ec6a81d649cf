"""The one configuration object, loaded from TOML, with typed defaults for the embedded run.

Each file (blockd.toml, policies/*.toml) is declared once as strict pydantic models; a
mistake is reported on one line as ``FILE: section.key: problem``, and unknown sections
and keys are errors: a misspelt key in an enforcement appliance must not be silently
ignored. The rest of blockd sees plain frozen dataclasses (``Config``, ``DnsSettings``,
``EnforcementPolicy``), whose defaults are also the files' defaults.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import re
import string
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

from blockd.core.enforcement import (
    EDE_PLACEHOLDERS,
    Anonymisation,
    Deadline,
    DeadlineUnit,
    EnforcementPolicy,
    NftAction,
)
from blockd.core.model import Action, BlockdError, InputError
from blockd.core.names import normalise_name
from blockd.core.timeparse import zone

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
    hits_flush_interval: float = 5.0
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


# -- the declared schemas ------------------------------------------------------------------
#
# Field names are the dataclass attributes they set; ``alias`` is the key in the file where
# the two differ. Errors name the file's keys (pydantic reports locations by alias).

_T = TypeVar("_T")


class _Table(BaseModel):
    """A TOML table: unknown keys refused, no coercion (``"2"`` is not 2), immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _expect(what: str) -> WrapValidator:
    """Any failure of the wrapped type reads ``must be WHAT, got VALUE``."""
    def wrap(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("expected", "must be {what}, got {got}",
                                      {"what": what, "got": repr(value)}) from None
    return WrapValidator(wrap)


def _from_str(convert: Callable[[str], _T], what: str = "a string") -> BeforeValidator:
    """Parse a TOML string into the field's type; ``convert`` raises ValueError."""
    def parse(value: Any) -> _T:
        if not isinstance(value, str):
            raise ValueError(f"must be {what}, got {value!r}")
        return convert(value)
    return BeforeValidator(parse)


def _addresses(port: int) -> BeforeValidator:
    """A non-empty TOML list of address strings, ``port`` where one gives none."""
    def parse(value: Any) -> tuple[Address, ...]:
        if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
            raise ValueError(f'must be a non-empty list of "ADDRESS:PORT" strings, got {value!r}')
        return tuple(_address(v, port) for v in value)
    return BeforeValidator(parse)


def _networks(value: Any) -> tuple[str, ...]:
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise ValueError(f"must be a list of networks, got {value!r}")
    return tuple(str(ipaddress.ip_network(v, strict=False)) for v in value)


def _ip(version: int) -> Callable[[str], str | None]:
    """``""`` is "none"; else an address of this IP version."""
    def check(text: str) -> str | None:
        if text and ipaddress.ip_address(text).version != version:
            raise ValueError(f"{text!r} is not an IPv{version} address")
        return str(ipaddress.ip_address(text)) if text else None
    return check


def _log_level(text: str) -> str:
    if text not in ("debug", "info", "warning", "error"):
        raise ValueError(f"must be debug, info, warning or error, got {text!r}")
    return text


def _zone(text: str) -> str:
    try:
        return normalise_name(text) + "."
    except InputError as exc:
        raise ValueError(exc.reason) from None


def _path(value: Any, info: ValidationInfo) -> Path:
    """Relative paths are read from the configuration file's directory."""
    if not isinstance(value, str):
        raise ValueError(f"must be a path string, got {value!r}")
    return (info.context["base"] if info.context else Path()) / value


_PositiveInt = Annotated[int, Field(gt=0), _expect("a positive integer")]
_PositiveFloat = Annotated[float, Field(gt=0), _expect("a positive number")]
_Path = Annotated[Path, BeforeValidator(_path)]
_Addresses53 = Annotated[tuple[Address, ...], _addresses(53)]


def _metrics_address(port: int) -> BeforeValidator:
    """``"ADDRESS[:PORT]"`` (``port`` if none), or ``""`` for off."""
    return _from_str(lambda s: _address(s, port) if s else None, '"ADDRESS:PORT" or ""')


_CONFIG, _DNS = Config(), DnsSettings()


class _DnsTable(_Table):
    listen: _Addresses53 = _DNS.listen
    upstream: _Addresses53 = _DNS.upstream
    workers: _PositiveInt = _DNS.workers
    allow: Annotated[tuple[str, ...], BeforeValidator(_networks)] = _DNS.allow
    rate_limit: _PositiveFloat = _DNS.rate_limit
    rate_burst: _PositiveFloat = _DNS.rate_burst
    cache_mb: _PositiveInt = _DNS.cache_mb
    upstream_timeout: _PositiveFloat = _DNS.upstream_timeout
    tcp_idle_timeout: _PositiveFloat = _DNS.tcp_idle_timeout
    stale_for: _PositiveFloat = _DNS.stale_for
    cache_max_ttl: _PositiveInt = _DNS.cache_max_ttl
    cache_max_negative_ttl: _PositiveInt = _DNS.cache_max_negative_ttl
    max_inflight: _PositiveInt = _DNS.max_inflight
    metrics: Annotated[Address | None, _metrics_address(9253)] = _DNS.metrics


class _StoreTable(_Table):
    db: str = _CONFIG.db
    state_dir: _Path | None = _CONFIG.state_dir
    store_check_interval: Annotated[
        float, Field(gt=0), _expect("a positive number of seconds")] = Field(
        _CONFIG.store_check_interval, alias="check_interval")


class _PoliciesTable(_Table):
    policies_dir: _Path = Field(_CONFIG.policies_dir, alias="dir")


class _NoticeTable(_Table):
    notice_ipv4: Annotated[str | None, _from_str(_ip(4))] = Field(
        _CONFIG.notice_ipv4, alias="ipv4")
    notice_ipv6: Annotated[str | None, _from_str(_ip(6))] = Field(
        _CONFIG.notice_ipv6, alias="ipv6")
    notice_url: Annotated[str, Field(pattern="^https?://"), _expect("an http(s) URL")] = Field(
        _CONFIG.notice_url, alias="url")
    notice_listen: Annotated[tuple[Address, ...], _addresses(8080)] = Field(
        _CONFIG.notice_listen, alias="listen")
    isp_name: str = _CONFIG.isp_name
    isp_contact: str = _CONFIG.isp_contact
    transparency: bool = _CONFIG.transparency
    notice_resolve_cnames: bool = Field(_CONFIG.notice_resolve_cnames, alias="resolve_cnames")
    tls_listen: Annotated[Address | None, _from_str(lambda s: _address(s, 443))] = \
        _CONFIG.tls_listen
    tls_cert: _Path | None = _CONFIG.tls_cert
    tls_key: _Path | None = _CONFIG.tls_key
    notice_metrics: Annotated[Address | None, _metrics_address(9254)] = Field(
        _CONFIG.notice_metrics, alias="metrics")


def _addresses_or_none(port: int) -> BeforeValidator:
    """A TOML list of address strings (may be empty), ``port`` where one gives none."""
    def parse(value: Any) -> tuple[Address, ...]:
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ValueError(f'must be a list of "ADDRESS:PORT" strings, got {value!r}')
        return tuple(_address(v, port) for v in value)
    return BeforeValidator(parse)


class _RpzTable(_Table):
    rpz_zone: Annotated[str, AfterValidator(_zone)] = Field(_CONFIG.rpz_zone, alias="zone")
    rpz_listen: Annotated[tuple[Address, ...], _addresses(53)] = Field(
        _CONFIG.rpz_listen, alias="listen")
    rpz_notify: Annotated[tuple[Address, ...], _addresses_or_none(53)] = Field(
        _CONFIG.rpz_notify, alias="notify")
    rpz_allow_transfer: Annotated[tuple[str, ...], BeforeValidator(_networks)] = Field(
        _CONFIG.rpz_allow_transfer, alias="allow_transfer")
    rpz_tsig_key: _Path | None = Field(_CONFIG.rpz_tsig_key, alias="tsig_key")


class _HitsTable(_Table):
    hits_flush_interval: Annotated[float, Field(gt=0), _expect("a positive number of seconds")] \
        = Field(_CONFIG.hits_flush_interval, alias="flush_interval")


class _NftTable(_Table):
    nft_local_output: bool = Field(_CONFIG.nft_local_output, alias="local_output")
    nft_metrics: Annotated[Address | None, _metrics_address(9255)] = Field(
        _CONFIG.nft_metrics, alias="metrics")


class _LogTable(_Table):
    log_level: Annotated[str, AfterValidator(_log_level)] = Field(
        _CONFIG.log_level, alias="level")


class _ConfigFile(_Table):
    """blockd.toml."""

    store: _StoreTable = _StoreTable()
    policies: _PoliciesTable = _PoliciesTable()
    notice: _NoticeTable = _NoticeTable()
    rpz: _RpzTable = _RpzTable()
    dns: _DnsTable = _DnsTable()
    hits: _HitsTable = _HitsTable()
    nft: _NftTable = _NftTable()
    log: _LogTable = _LogTable()


_NAME = r"^[a-z0-9_-]+$"
_LAX = Field(strict=False)  # TOML gives enum members as strings and tuples as lists


def _one_of(cls: type[enum.StrEnum]) -> WrapValidator:
    return _expect("one of " + ", ".join(cls))


def _timezone(text: str) -> str:
    try:
        zone(text)
    except BlockdError:
        raise ValueError(f"unknown IANA time zone {text!r}") from None
    return text


def _ede_text(text: str) -> str:
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    except ValueError as exc:
        raise ValueError(f"bad braces in template ({exc})") from None
    unknown = names - EDE_PLACEHOLDERS
    if unknown:
        allowed = ", ".join("{" + p + "}" for p in sorted(EDE_PLACEHOLDERS))
        raise ValueError(f"unknown placeholder {{{sorted(unknown)[0]}}} (allowed: {allowed})")
    if len(text.encode("utf-8")) > 300:
        raise ValueError("longer than 300 bytes (EDE text must fit a small DNS answer)")
    return text


_POLICY = EnforcementPolicy("default")


class _PolicyDns(_Table):
    dns_action: Annotated[Action, _LAX, _one_of(Action)] = Field(_POLICY.dns_action, alias="action")
    dns_ttl: Annotated[int, Field(ge=1, le=86400), _expect("an integer between 1 and 86400")] \
        = Field(_POLICY.dns_ttl, alias="ttl")
    ede_text: Annotated[str, AfterValidator(_ede_text)] = _POLICY.ede_text
    block_cname_chains: bool = _POLICY.block_cname_chains


class _PolicyNotice(_Table):
    notice_template: Annotated[  # None: the policy's own name
        str, Field(pattern=_NAME), _expect("a template name of a-z, 0-9, _ and -"),
    ] | None = Field(None, alias="template")
    languages: Annotated[
        tuple[Annotated[str, Field(pattern=r"^[a-z]{2}$")], ...], Field(min_length=1),
        _LAX, _expect("a non-empty list of two-letter language codes"),
    ] = _POLICY.languages


class _PolicyHits(_Table):
    hit_retention_days: Annotated[
        int, Field(ge=1, le=3650), _expect("an integer between 1 and 3650"),
    ] = Field(_POLICY.hit_retention_days, alias="retention_days")
    client_anonymisation: Annotated[Anonymisation, _LAX, _one_of(Anonymisation)] = \
        _POLICY.client_anonymisation


class _PolicyNft(_Table):
    nft_action: Annotated[NftAction, _LAX, _one_of(NftAction)] = Field(_POLICY.nft_action,
                                                                 alias="action")


class _PolicyDeadline(_Table):
    """Both keys or neither: a missing one is an error naming it."""

    amount: Annotated[int, Field(ge=1, le=100_000), _expect("an integer between 1 and 100000")]
    unit: Annotated[DeadlineUnit, _LAX, _one_of(DeadlineUnit)]


class _PolicyFile(_Table):
    """policies/NAME.toml."""

    description: str = _POLICY.description
    jurisdiction: Annotated[
        str, Field(pattern="^[A-Z]{2}$"), _expect("an ISO 3166 two-letter code in capitals"),
    ] | None = _POLICY.jurisdiction
    timezone: Annotated[str, AfterValidator(_timezone)] = _POLICY.timezone
    dns: _PolicyDns = _PolicyDns()
    notice: _PolicyNotice = _PolicyNotice()
    hits: _PolicyHits = _PolicyHits()
    nft: _PolicyNft = _PolicyNft()
    deadline: _PolicyDeadline | None = None


# -- loading -------------------------------------------------------------------------------


def _one_line(path: Path, exc: ValidationError) -> str:
    """The first of pydantic's errors as ``FILE: section.key: problem``."""
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in err["loc"])
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        problem = "unknown section" if isinstance(value, dict) else "unknown key"
    elif kind == "value_error":
        problem = str(err["ctx"]["error"])
    elif kind == "missing":
        problem = f"required when [{err['loc'][0]}] is present"
    elif kind in _MUST_BE:
        problem = f"must be {_MUST_BE[kind]}, got {value!r}"
    else:
        problem = err["msg"]
    return f"{path}: {where}: {problem}"


_MUST_BE = {"string_type": "a string", "bool_type": "true or false", "int_type": "an integer",
            "float_type": "a number", "model_type": "a table"}


def _line_of(path: Path, loc: tuple[int | str, ...]) -> int | None:
    """The line of ``[section]`` / ``key =`` an error is about (tomllib keeps no
    positions; a plain scan is enough for blockd.toml's one level of tables)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    section, key = str(loc[0]), str(loc[1]) if len(loc) > 1 else None
    found = None
    inside = False
    for number, text in enumerate(lines, 1):
        stripped = text.strip()
        if stripped.startswith("["):
            inside = stripped.strip("[] \t") == section
            if inside and found is None:
                found = number
            continue
        if inside and key is not None and re.match(
                rf"^{re.escape(key)}\s*=|^\"{re.escape(key)}\"\s*=", stripped):
            return number
    return found


def _read_toml(path: Path, error: type[BlockdError]) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: {exc}") from None


def _values(table: BaseModel, but: str = "") -> dict[str, Any]:
    """The attributes a table sets, sub-tables lifted up (the dataclasses are flat);
    ``but`` names a sub-table the caller turns into a value of its own."""
    out: dict[str, Any] = {}
    for name, value in table:
        if name != but:
            out.update(_values(value) if isinstance(value, BaseModel) else {name: value})
    return out


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
    data = _read_toml(path, ConfigError)
    try:
        file = _ConfigFile.model_validate(data, context={"base": path.parent})
    except ValidationError as exc:
        line = _line_of(path, exc.errors(include_url=False)[0]["loc"])
        raise ConfigError(_one_line(path, exc) + (f" (line {line})" if line else "")) \
            from None
    return Config(source=path, dns=DnsSettings(**_values(file.dns)), **_values(file, "dns"))


def load_policy(path: Path) -> EnforcementPolicy:
    """One policy file; its name is the file's stem."""
    name = path.stem
    if not re.match(_NAME, name):
        raise PolicyFileError(f"{path}: file name must be a-z, 0-9, _ and - (.toml)")
    try:
        file = _PolicyFile.model_validate(_read_toml(path, PolicyFileError))
    except ValidationError as exc:
        raise PolicyFileError(_one_line(path, exc)) from None
    values = _values(file, "deadline")
    values["notice_template"] = values["notice_template"] or name
    d = file.deadline
    deadline = Deadline(d.amount, d.unit) if d else None
    return EnforcementPolicy(name=name, deadline=deadline, **values)


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
