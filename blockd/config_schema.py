"""The declared schemas of blockd.toml and policies/*.toml: strict, frozen pydantic models.

Building these models costs about 0.2 s at import, so only a file that was not validated
before loads this module (``blockd.configmemo`` remembers what a file validated into).
A mistake is reported on one line as ``FILE: section.key: problem``; unknown sections and
keys are errors: a misspelt key in an enforcement appliance must not be silently ignored.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import string
from collections.abc import Callable
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

from blockd.config import (
    Address,
    Config,
    ConfigError,
    DnsSettings,
    PolicyFileError,
    _address,
)
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
    memo_mb: _PositiveInt = _DNS.memo_mb
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
    rpz_metrics: Annotated[Address | None, _metrics_address(9256)] = Field(
        _CONFIG.rpz_metrics, alias="metrics")


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


def _values(table: BaseModel, but: str = "") -> dict[str, Any]:
    """The attributes a table sets, sub-tables lifted up (the dataclasses are flat);
    ``but`` names a sub-table the caller turns into a value of its own."""
    out: dict[str, Any] = {}
    for name, value in table:
        if name != but:
            out.update(_values(value) if isinstance(value, BaseModel) else {name: value})
    return out


def validate_config(path: Path, data: dict[str, Any]) -> Config:
    """blockd.toml's parsed TOML as a Config, or ConfigError naming the key and line."""
    try:
        file = _ConfigFile.model_validate(data, context={"base": path.parent})
    except ValidationError as exc:
        line = _line_of(path, exc.errors(include_url=False)[0]["loc"])
        raise ConfigError(_one_line(path, exc) + (f" (line {line})" if line else "")) \
            from None
    return Config(source=path, dns=DnsSettings(**_values(file.dns)), **_values(file, "dns"))


def validate_policy(path: Path, data: dict[str, Any]) -> EnforcementPolicy:
    """A policy file's parsed TOML as an EnforcementPolicy named after the file."""
    name = path.stem
    try:
        file = _PolicyFile.model_validate(data)
    except ValidationError as exc:
        raise PolicyFileError(_one_line(path, exc)) from None
    values = _values(file, "deadline")
    values["notice_template"] = values["notice_template"] or name
    d = file.deadline
    deadline = Deadline(d.amount, d.unit) if d else None
    return EnforcementPolicy(name=name, deadline=deadline, **values)
