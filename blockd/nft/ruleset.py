"""What the kernel should hold for the orders in force, and the difference to what it holds.

Pure: from a compiled policy to the address sets of table ``inet blockd``, and from two
sets of prefixes to the elements to add and delete. Interval sets cannot hold overlapping
elements, so covered prefixes are merged (a /32 inside a blocked /24 is the /24).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from blockd.core.model import TargetKind
from blockd.core.policy import Policy
from blockd.nft.netlink import (
    HOOK_FORWARD,
    Batch,
    Network,
    daddr_in_set_rule,
    drop,
)

TABLE = "blockd"
SETS = {4: "block_v4", 6: "block_v6"}
CHAIN = "forward"


@dataclass(frozen=True, slots=True)
class Change:
    version: int
    add: tuple[Network, ...]
    remove: tuple[Network, ...]


def desired(policy: Policy) -> dict[int, set[Network]]:
    """The merged prefixes of every address target in force, per IP version."""
    nets: dict[int, list[Network]] = {4: [], 6: []}
    for _, target in policy.entries():
        if target.kind is not TargetKind.DOMAIN:
            net = ipaddress.ip_network(target.value)
            nets[net.version].append(net)
    return {v: set(ipaddress.collapse_addresses(n)) for v, n in nets.items()}  # type: ignore[type-var]


def _key(net: Network) -> tuple[int, int]:
    return int(net.network_address), net.prefixlen


def diff(current: dict[int, set[Network]], want: dict[int, set[Network]]) -> list[Change]:
    out = []
    for version in (4, 6):
        have, need = current.get(version, set()), want.get(version, set())
        out.append(Change(version, tuple(sorted(need - have, key=_key)),
                          tuple(sorted(have - need, key=_key))))
    return out


def plan(changes: list[Change], table_exists: bool) -> Batch:
    """One batch: create the table, sets, chain and rules if missing, then the element diff.
    Removals go first so a prefix that is split or merged never overlaps itself."""
    batch = Batch(TABLE)
    if not table_exists:
        batch.add_table()
        for version, name in SETS.items():
            batch.add_set(name, version, set_id=version)
        batch.add_chain(CHAIN, HOOK_FORWARD, 0)
        for version, name in SETS.items():
            batch.add_rule(CHAIN, daddr_in_set_rule(version, name, drop()))
    for change in changes:
        if change.remove:
            batch.delete_elements(SETS[change.version], change.remove)
    for change in changes:
        if change.add:
            batch.add_elements(SETS[change.version], change.add)
    return batch
