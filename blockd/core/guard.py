"""The overblocking guard: refuse targets that would block more than any order can mean.

The failures regulators remember are collateral: a CDN address taking down thousands of
sites, a public suffix, a subnet far wider than the site. Every target passes here before
it reaches the store (and the kernel); a refusal can be overridden only with
``--force --justification``, which the journal records. The data (protected names and
networks) lives in ``policies/`` so operators can extend it; checks are pure lookups.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from blockd.core.model import BlockdError, DomainMatch, InputError, Target, TargetKind
from blockd.core.names import name_suffixes, normalise_name

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class GuardFileError(BlockdError):
    """``FILE:LINE: problem`` in a protected-names or protected-networks file."""


@dataclass(frozen=True, slots=True)
class Refusal:
    target: Target
    reason: str

    def __str__(self) -> str:
        return f"{self.target.spec}: {self.reason}"


@cache
def _psl() -> object:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()  # the bundled list, private section (blogspot.com...) included


class _Intervals:
    """Protected networks of one IP version as sorted integer intervals: O(log n) overlap."""

    def __init__(self, nets: list[tuple[Network, str]]) -> None:
        items = sorted((int(n.network_address), int(n.broadcast_address), n, note)
                       for n, note in nets)
        self.starts = [i[0] for i in items]
        self.items = items
        self.max_end: list[int] = []
        high = -1
        for _, end, _, _ in items:
            high = max(high, end)
            self.max_end.append(high)

    def overlap(self, start: int, end: int) -> tuple[Network, str] | None:
        """The lowest protected network overlapping [start, end], if any (the lowest, so
        a refusal names the same network however many more are added above it)."""
        i = bisect.bisect_right(self.starts, end) - 1
        found = None
        while i >= 0 and self.max_end[i] >= start:
            s, e, net, note = self.items[i]
            if s <= end and e >= start:
                found = net, note
            i -= 1
        return found


_SPECIAL = (
    ("is_loopback", "is loopback"),
    ("is_multicast", "is multicast"),
    ("is_link_local", "is link-local"),
    ("is_unspecified", "is the unspecified address"),
    ("is_reserved", "is a reserved range"),
    ("is_private", "is a private or special-purpose range"),
)


class Guard:
    def __init__(
        self, names: Iterable[tuple[str, str]] = (), networks: Iterable[tuple[Network, str]] = (),
        *, max_prefix_v4: int = 24, max_prefix_v6: int = 48,
        high_impact: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.names = dict(names)
        self.high_impact = dict(high_impact)
        self.ancestors: dict[str, str] = {}
        for name in self.names:
            for parent in name_suffixes(name)[1:]:
                self.ancestors.setdefault(parent, name)
        nets = list(networks)
        self.v4 = _Intervals([(n, note) for n, note in nets if n.version == 4])
        self.v6 = _Intervals([(n, note) for n, note in nets if n.version == 6])
        self.max_prefix = {4: max_prefix_v4, 6: max_prefix_v6}

    def check(self, target: Target) -> list[Refusal]:
        """Every reason to refuse ``target`` (empty: allowed)."""
        if target.kind is TargetKind.DOMAIN:
            reasons = self._name(target)
        else:
            reasons = self._address(ipaddress.ip_network(target.value))
        return [Refusal(target, r) for r in reasons]

    def collateral(self, target: Target) -> list[str]:
        """Warnings for a target that may be lawful but hits many people at once (a platform
        on ``high-impact.txt``, or a name inside or above one): accepted, but said aloud and
        journaled."""
        if target.kind is not TargetKind.DOMAIN:
            return []
        name = target.value
        for parent in name_suffixes(name):
            if parent in self.high_impact:
                return [f"{target.spec}: high impact: {self.high_impact[parent]}"]
        if target.match is not DomainMatch.EXACT:
            below = [n for n in self.high_impact if n.endswith("." + name)]
            if below:
                return [f"{target.spec}: covers high-impact {below[0]} "
                        f"({self.high_impact[below[0]]})"]
        return []

    def _name(self, target: Target) -> list[str]:
        name = target.value
        out: list[str] = []
        if "." not in name:
            out.append("is a top-level domain")
        elif _psl().is_public(name):  # type: ignore[attr-defined]
            out.append("is a public suffix (Public Suffix List)")
        if name in self.names:
            out.append(f"is a protected name ({self.names[name]})")
        else:
            for parent in name_suffixes(name)[1:]:
                if parent in self.names:
                    out.append(f"is inside protected name {parent} ({self.names[parent]})")
                    break
        if target.match is not DomainMatch.EXACT and name in self.ancestors:
            covered = self.ancestors[name]
            out.append(f"covers protected name {covered} ({self.names[covered]})")
        return out

    def _address(self, net: Network) -> list[str]:
        out: list[str] = []
        first = net.network_address
        for attr, reason in _SPECIAL:
            if getattr(net, attr) or getattr(first, attr):
                out.append(reason)
                break
        else:
            if not first.is_global or not net.broadcast_address.is_global:
                out.append("is not globally routable")
        limit = self.max_prefix[net.version]
        if net.prefixlen < limit:
            out.append(f"is broader than /{limit}")
        hit = (self.v4 if net.version == 4 else self.v6).overlap(
            int(net.network_address), int(net.broadcast_address))
        if hit is not None:
            out.append(f"overlaps protected network {hit[0]} ({hit[1]})")
        return out


def _lines(path: Path) -> Iterable[tuple[int, str, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GuardFileError(f"{path}: cannot read ({exc.strerror})") from None
    for number, raw in enumerate(text.splitlines(), 1):
        entry, _, note = raw.partition("#")
        entry = entry.strip()
        if entry:
            yield number, entry, note.strip() or "protected"


def _find(layers: Sequence[Path], name: str) -> Path:
    """The file from the first layer that has it (an operator's directory overrides the
    shipped policies file by file); the last layer's path when none has it."""
    for layer in layers:
        if (layer / name).exists():
            return layer / name
    return layers[-1] / name


def load_guard(policies: Path | Sequence[Path]) -> Guard:
    """The guard with ``protected-names.txt``, ``protected-networks.txt`` and (if present)
    ``protected-providers.txt`` and ``high-impact.txt``, each from the first of the
    policy directories that has it."""
    layers = [policies] if isinstance(policies, Path) else list(policies)
    names: list[tuple[str, str]] = []
    path = _find(layers, "protected-names.txt")
    for number, entry, note in _lines(path):
        try:
            names.append((normalise_name(entry), note))
        except InputError as exc:
            raise GuardFileError(f"{path}:{number}: {exc.reason}") from None
    networks: list[tuple[Network, str]] = []
    path = _find(layers, "protected-networks.txt")
    for number, entry, note in _lines(path):
        try:
            networks.append((ipaddress.ip_network(entry, strict=True), note))
        except ValueError as exc:
            raise GuardFileError(f"{path}:{number}: {exc}") from None
    path = _find(layers, "protected-providers.txt")  # from `blockd guard update`
    if path.exists():
        for number, entry, note in _lines(path):
            try:
                networks.append((ipaddress.ip_network(entry, strict=True), note))
            except ValueError as exc:
                raise GuardFileError(f"{path}:{number}: {exc}") from None
    high: list[tuple[str, str]] = []
    path = _find(layers, "high-impact.txt")
    if path.exists():
        for number, entry, note in _lines(path):
            try:
                high.append((normalise_name(entry), note))
            except InputError as exc:
                raise GuardFileError(f"{path}:{number}: {exc.reason}") from None
    return Guard(names, networks, high_impact=high)
