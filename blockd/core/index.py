"""Compile orders into a block index and decide whether a name or address is blocked.

The index is what is in force at one instant; it is not the enforcement policy of a
regime (``core/enforcement.py``), which says *how* a blocked name is answered.

Pure: no I/O and no clock reads; the time is passed in. The index costs one dict probe per
label of a name (label-suffix hashing) and one per distinct prefix length of an address, so
lookups do not slow down as lists grow. A :class:`IndexBuilder` is built from scratch or
kept current by applying journal entries; :meth:`IndexBuilder.index` hands out immutable
snapshots (copy-on-write), so a daemon can answer from one while the next is prepared.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import TypeVar

from blockd.core.journal import (
    ORDER_ADD,
    ORDER_AMEND,
    ORDER_STATUS,
    TARGET_ADD,
    TARGET_REMOVE,
    JournalEntry,
    OrderBook,
)
from blockd.core.model import Action, DomainMatch, OrderRecord, Target, TargetKind
from blockd.core.names import (
    normalise_name,
    parse_address,
    target_from_parts,
    target_from_spec,
)

_SUBTREE, _EXACT, _WILDCARD = 0, 1, 2
_MODE = {DomainMatch.SUBTREE: _SUBTREE, DomainMatch.EXACT: _EXACT, DomainMatch.WILDCARD: _WILDCARD}
_MATCH = {v: k for k, v in _MODE.items()}

# A table value is one code (the common case: one order per key) or a tuple of codes.
# code = order_index << 2 | mode. Plain ints keep a million keys well under the memory goal.
Codes = int | tuple[int, ...]
NetKey = tuple[int, int]  # (IP version, prefix length)
# One slot of the index: a domain key (the target name), or (IP version, prefix length,
# network as an int) for an address. All the targets of a slot share their RPZ owners.
SlotKey = str | tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Match:
    """One order that covers the subject, through which target, with which action."""

    order: OrderRecord
    target: Target
    action: Action
    specificity: int


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one name or address: every covering order, most specific first."""

    subject: str
    matches: tuple[Match, ...] = ()

    @property
    def blocked(self) -> bool:
        return bool(self.matches)

    @property
    def action(self) -> Action | None:
        return self.matches[0].action if self.matches else None

    @property
    def primary(self) -> Match | None:
        return self.matches[0] if self.matches else None


def _put(table: dict[object, Codes], key: object, code: int) -> None:
    cur = table.get(key)
    if cur is None:
        table[key] = code
    elif isinstance(cur, int):
        if cur != code:
            table[key] = (cur, code)
    elif code not in cur:
        table[key] = (*cur, code)


def _drop(table: dict[object, Codes], key: object, code: int) -> None:
    cur = table.get(key)
    if cur is None:
        return
    if isinstance(cur, int):
        if cur == code:
            del table[key]
        return
    rest = tuple(c for c in cur if c != code)
    table[key] = rest[0] if len(rest) == 1 else rest


def _codes(value: Codes) -> tuple[int, ...]:
    return (value,) if isinstance(value, int) else value


_K = TypeVar("_K")


def _changed(old: Mapping[_K, Codes], new: Mapping[_K, Codes]) -> Iterator[_K]:
    """Keys whose codes differ between two tables (added, removed or changed)."""
    missing = object()
    for key, value in new.items():
        if old.get(key, missing) != value:
            yield key
    for key in old:
        if key not in new:
            yield key


def _network(version: int, netint: int, plen: int) -> Target:
    """The target for a table slot (an int can be v4 or v6, so the class is explicit)."""
    bits = 32 if version == 4 else 128
    cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
    net = cls((netint << (bits - plen), plen))
    if plen == bits:
        return Target(TargetKind.IP, str(net.network_address))
    return Target(TargetKind.PREFIX, str(net))


def _net_key(target: Target) -> tuple[NetKey, int]:
    net = ipaddress.ip_network(target.value)
    shift = net.max_prefixlen - net.prefixlen
    return (net.version, net.prefixlen), int(net.network_address) >> shift


MATCHES_KEPT = 200_000  # Match objects an index keeps for reuse (then it starts over)


@dataclass(frozen=True)
class BlockIndex:
    """An immutable block index for the instant ``at``.

    ``valid_until`` is the next instant at which an order enters or leaves force; the
    holder re-derives the index then (no command is needed for an order to expire).
    """

    at: datetime
    seq: int
    valid_until: datetime | None
    orders: Mapping[str, OrderRecord]
    _names: Mapping[str, Codes] = field(repr=False)
    _nets: Mapping[NetKey, Mapping[int, Codes]] = field(repr=False)
    _lengths: tuple[tuple[NetKey, ...], tuple[NetKey, ...]] = field(repr=False)
    _refs: tuple[str, ...] = field(repr=False)
    _actions: Mapping[str, Action] = field(repr=False)
    # Match objects already built, per (order slot, key, mode): a blocked name asked again
    # (or its www., m., cdn. siblings) costs a dict lookup, not two frozen objects
    _made: dict[tuple[int, str, int], Match] = field(default_factory=dict, repr=False,
                                                     compare=False)

    # -- decisions ---------------------------------------------------------------

    def decide(self, subject: str) -> Decision:
        """Decide for user text: an IP address or a host name (IDN accepted)."""
        address = parse_address(subject, "subject")
        if address is not None:
            if address.kind is not TargetKind.IP:
                return Decision(address.value)
            return self.decide_ip(address.value)
        return self.decide_name(normalise_name(subject, "subject"))

    def decide_name(self, name: str) -> Decision:
        """Decide for a normalised (lower-case punycode, no trailing dot) name."""
        return Decision(name, self._sorted(self._found(name)))

    def first_match(self, name: str) -> Match | None:
        """``decide_name(name).primary`` without building the Decision: the resolver asks
        this once per query."""
        found = self._found(name)
        if not found:
            return None
        if len(found) == 1:
            return next(iter(found.values()))
        return self._sorted(found)[0]

    def _found(self, name: str) -> dict[int, Match]:
        """The most specific match of each order covering ``name``, by order slot."""
        names = self._names
        found: dict[int, Match] = {}
        depth, start, key = 0, 0, name
        while True:  # the name, then each parent (name_suffixes, without the list)
            value = names.get(key)
            if value is not None:
                labels = key.count(".") + 1
                for code in (value,) if type(value) is int else value:  # type: ignore[union-attr]
                    mode = code & 3
                    if (mode == _EXACT and depth) or (mode == _WILDCARD and not depth):
                        continue
                    idx = code >> 2
                    spec = labels * 4 + mode
                    best = found.get(idx)
                    if best is None or best.specificity < spec:
                        made = self._made.get((idx, key, mode))
                        if made is None:
                            if len(self._made) >= MATCHES_KEPT:
                                self._made.clear()
                            made = self._made[(idx, key, mode)] = self._match(
                                idx, Target(TargetKind.DOMAIN, key, _MATCH[mode]), spec)
                        found[idx] = made
            dot = name.find(".", start)
            if dot == -1:
                return found
            start = dot + 1
            key = name[start:]
            depth += 1

    def decide_ip(self, address: str) -> Decision:
        ip = ipaddress.ip_address(address)
        value = int(ip)
        found: dict[int, Match] = {}
        for key in self._lengths[ip.version == 6]:
            _, plen = key
            shift = ip.max_prefixlen - plen
            codes = self._nets[key].get(value >> shift)
            if codes is None:
                continue
            for code in _codes(codes):
                idx = code >> 2
                if idx not in found:
                    target = _network(ip.version, value >> shift, plen)
                    found[idx] = self._match(idx, target, plen)
        return Decision(str(ip), self._sorted(found))

    def _match(self, idx: int, target: Target, specificity: int) -> Match:
        order = self.orders[self._refs[idx]]
        action = self._actions.get(order.policy, Action.NOTICE)
        return Match(order, target, action, specificity)

    @staticmethod
    def _sorted(found: dict[int, Match]) -> tuple[Match, ...]:
        if len(found) < 2:  # nearly always: one order covers the name
            return tuple(found.values())
        return tuple(
            sorted(found.values(), key=lambda m: (-m.specificity, m.order.reference))
        )

    # -- listing -----------------------------------------------------------------

    def entries(self) -> Iterator[tuple[OrderRecord, Target]]:
        """Every (order, target) pair in force, for exports and comparisons."""
        for key, value in self._names.items():
            for code in _codes(value):
                target = Target(TargetKind.DOMAIN, key, _MATCH[code & 3])
                yield self.orders[self._refs[code >> 2]], target
        for (version, plen), table in self._nets.items():
            for netint, value in table.items():
                target = _network(version, netint, plen)
                for code in _codes(value):
                    yield self.orders[self._refs[code >> 2]], target

    def slots(self) -> Iterator[SlotKey]:
        """Every slot in force, in table order, without building the (order, target)s:
        the RPZ primary streams a zone of a million slots from this."""
        yield from self._names
        for (version, plen), table in self._nets.items():
            for netint in table:
                yield (version, plen, netint)

    def entries_at(self, key: SlotKey) -> list[tuple[OrderRecord, Target]]:
        """The (order, target) pairs of one slot (empty when nothing is in force there)."""
        if isinstance(key, str):
            value = self._names.get(key)
            if value is None:
                return []
            return [(self.orders[self._refs[c >> 2]],
                     Target(TargetKind.DOMAIN, key, _MATCH[c & 3])) for c in _codes(value)]
        version, plen, netint = key
        codes = self._nets.get((version, plen), {}).get(netint)
        if codes is None:
            return []
        target = _network(version, netint, plen)
        return [(self.orders[self._refs[c >> 2]], target) for c in _codes(codes)]

    def name_slots(self) -> Iterator[tuple[str, Codes]]:
        """(name, codes) of every domain slot: the raw table, for the RPZ primary's
        fast path (:meth:`code_entry` says what a code means)."""
        return iter(self._names.items())

    def code_entry(self, code: int) -> tuple[OrderRecord, DomainMatch]:
        """The order and match mode a domain slot's code stands for."""
        return self.orders[self._refs[code >> 2]], _MATCH[code & 3]

    def net_slots(self) -> Iterator[SlotKey]:
        """Every address slot in force, as :meth:`slots` gives them."""
        for (version, plen), table in self._nets.items():
            for netint in table:
                yield (version, plen, netint)

    def changed_keys(self, older: BlockIndex) -> set[SlotKey] | None:
        """The slots whose entries may differ from ``older``'s; None when every slot may
        (another builder numbered the orders, or an action or a policy changed).

        A pass over both tables without copying either (a million keys in a fraction of
        a second, no set of a million items), so the RPZ primary can send the difference
        of a change instead of the zone.
        """
        if self._refs[: len(older._refs)] != older._refs or self._actions != older._actions:
            return None
        for ref, order in older.orders.items():
            new = self.orders.get(ref)
            if new is not None and new.policy != order.policy:
                return None
        names: set[str] = set(_changed(older._names, self._names))
        out: set[SlotKey] = set(names)
        for nk in older._nets.keys() | self._nets.keys():
            a, b = older._nets.get(nk, {}), self._nets.get(nk, {})
            out.update((nk[0], nk[1], n) for n in _changed(a, b))
        return out

    def snapshot(self) -> frozenset[tuple[str, str]]:
        """(reference, target spec) pairs in force: equal for equal policies."""
        return frozenset((o.reference, t.spec) for o, t in self.entries())

    def action_for(self, order: OrderRecord) -> Action:
        return self._actions.get(order.policy, Action.NOTICE)

    @property
    def size(self) -> int:
        return len(self._names) + sum(len(t) for t in self._nets.values())


class IndexBuilder:
    """Keeps the index current, from a snapshot of orders or by following the journal."""

    def __init__(
        self, at: datetime, actions: Mapping[str, Action] | None = None
    ) -> None:
        self.book = OrderBook()
        self.at = at
        self._actions = dict(actions or {})
        self._names: dict[str, Codes] = {}
        self._nets: dict[NetKey, dict[int, Codes]] = {}
        self._refs: list[str] = []
        self._idx: dict[str, int] = {}
        self._indexed: set[str] = set()
        self._shared = False

    # -- building --------------------------------------------------------------

    def load(self, order: OrderRecord, targets: Iterable[Target] = ()) -> None:
        """Add an order with its targets (from the store), indexing it if in force."""
        targets = list(targets) or list(order.targets)
        self.book.add_order(order, targets)
        if order.in_force(self.at):
            self._index(order.reference, targets, add=True)
            self._indexed.add(order.reference)

    def load_rows(self, order: OrderRecord, rows: Iterable[tuple[str, str, str]]) -> None:
        """Like :meth:`load`, from stored (kind, value, match) columns without objects.

        The bulk path at start-up: domain rows go straight into the index.
        """
        specs: set[str] = set()
        self.book.orders[order.reference] = order
        self.book.targets[order.reference] = specs
        live = order.in_force(self.at)
        if live:
            self._unshare()
            self._indexed.add(order.reference)
        idx = self._slot(order.reference)
        names: dict[object, Codes] = self._names  # type: ignore[assignment]
        prefix = {"subtree": "", "exact": "=", "wildcard": "*."}
        for kind, value, match in rows:
            if kind == "domain":
                specs.add(prefix[match] + value if match != "subtree" else value)
                if live:
                    _put(names, value, idx << 2 | _MODE[DomainMatch(match)])
            else:
                target = target_from_parts(kind, value, match)
                specs.add(target.spec)
                if live:
                    self._index(order.reference, (target,), add=True)

    def apply(self, entry: JournalEntry) -> None:
        """Apply one journal entry; the index changes by exactly what the entry changed."""
        action, ref, touched = self.book.apply(entry)
        if not ref:  # an entry about the store, not an order
            return
        was = ref in self._indexed
        now = self.book.orders[ref].in_force(self.at)
        if (action == ORDER_ADD and now) or (action == TARGET_ADD and was):
            self._index(ref, touched, add=True)
        elif action == TARGET_REMOVE and was:
            self._index(ref, touched, add=False)
        elif action in (ORDER_STATUS, ORDER_AMEND) and was != now:
            self._index(ref, self._all_targets(ref), add=now)
        if now:
            self._indexed.add(ref)
        else:
            self._indexed.discard(ref)

    def advance(self, at: datetime) -> bool:
        """Move the clock; orders entering or leaving force change the index. True if any."""
        self.at = at
        changed = False
        for ref, order in self.book.orders.items():
            now = order.in_force(at)
            if now != (ref in self._indexed):
                self._index(ref, self._all_targets(ref), add=now)
                (self._indexed.add if now else self._indexed.discard)(ref)
                changed = True
        return changed

    def set_actions(self, actions: Mapping[str, Action]) -> None:
        self._actions = dict(actions)

    def next_transition(self) -> datetime | None:
        """The next instant after ``at`` when some order enters or leaves force."""
        times = [
            t
            for o in self.book.orders.values()
            if o.status.value == "active"
            for t in (o.effective_from, o.effective_until)
            if t is not None and t > self.at
        ]
        return min(times, default=None)

    def index(self) -> BlockIndex:
        """An immutable snapshot; later changes to the builder do not affect it."""
        self._shared = True
        lengths: tuple[list[NetKey], list[NetKey]] = ([], [])
        for key, table in self._nets.items():
            if table:
                lengths[key[0] == 6].append(key)
        return BlockIndex(
            at=self.at,
            seq=self.book.seq,
            valid_until=self.next_transition(),
            orders=MappingProxyType(dict(self.book.orders)),
            _names=MappingProxyType(self._names),
            _nets=MappingProxyType(self._nets),
            _lengths=(
                tuple(sorted(lengths[0], key=lambda k: -k[1])),
                tuple(sorted(lengths[1], key=lambda k: -k[1])),
            ),
            _refs=tuple(self._refs),
            _actions=MappingProxyType(dict(self._actions)),
        )

    # -- index -----------------------------------------------------------------

    def _all_targets(self, ref: str) -> list[Target]:
        return [target_from_spec(s) for s in self.book.targets[ref]]

    def _slot(self, ref: str) -> int:
        idx = self._idx.get(ref)
        if idx is None:
            idx = self._idx[ref] = len(self._refs)
            self._refs.append(ref)
        return idx

    def _unshare(self) -> None:
        if self._shared:
            self._names = dict(self._names)
            self._nets = {k: dict(v) for k, v in self._nets.items()}
            self._shared = False

    def _index(self, ref: str, targets: Iterable[Target], *, add: bool) -> None:
        self._unshare()
        idx = self._slot(ref)
        op = _put if add else _drop
        names: dict[object, Codes] = self._names  # type: ignore[assignment]
        for t in targets:
            if t.kind is TargetKind.DOMAIN:
                op(names, t.value, idx << 2 | _MODE[t.match])
            else:
                key, netint = _net_key(t)
                table = self._nets.setdefault(key, {})
                op(table, netint, idx << 2)  # type: ignore[arg-type]


def compile_index(
    orders: Iterable[OrderRecord], at: datetime, actions: Mapping[str, Action] | None = None
) -> BlockIndex:
    """From scratch: the index of ``orders`` (with their targets) at instant ``at``."""
    builder = IndexBuilder(at, actions)
    for order in orders:
        builder.load(order)
    return builder.index()
