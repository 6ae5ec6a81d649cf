"""What the kernel should hold for the orders in force, and the difference to what it holds.

Pure: from a compiled policy to the address sets of table ``inet blockd`` (one interval set
per IP version and action of the order's policy: drop, reject or notice), and from two
states to the elements to add and delete. Interval sets cannot hold overlapping elements,
so covered prefixes are merged within a set (a /32 inside a blocked /24 is the /24).

Chains: ``prerouting`` (nat) sends TCP port 80 for notice-set addresses to the notice
server; ``forward`` drops or rejects (TCP reset, otherwise ICMP administratively
prohibited) what remains; ``forward`` and ``input`` refuse TCP 443 to the notice address at
once, since no page can be shown there without a certificate error.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from blockd.core.enforcement import NftAction
from blockd.core.index import BlockIndex
from blockd.core.model import Target, TargetKind
from blockd.nft.netlink import (
    HOOK_FORWARD,
    HOOK_INPUT,
    HOOK_OUTPUT,
    HOOK_PREROUTING,
    Batch,
    Network,
    daddr_in_set_rule,
    dnat,
    drop,
    match_daddr,
    match_tcp,
    match_tcp_dport,
    reject_admin_prohibited,
    reject_tcp_reset,
)

TABLE = "blockd"
Key = tuple[int, NftAction]
SETS: dict[Key, str] = {(v, a): f"v{v}_{a.value}" for v in (4, 6) for a in NftAction}


@dataclass(frozen=True, slots=True)
class Notice:
    """Where port-80 traffic for notice-set addresses goes (the notice server)."""

    ipv4: ipaddress.IPv4Address | None
    ipv6: ipaddress.IPv6Address | None
    port: int = 80


@dataclass(frozen=True, slots=True)
class Change:
    key: Key
    add: tuple[Network, ...]
    remove: tuple[Network, ...]


def desired(policy: BlockIndex, actions: Mapping[str, NftAction],
            default: NftAction = NftAction.REJECT,
            refused: Callable[[Target], bool] | None = None) -> dict[Key, set[Network]]:
    """The merged prefixes of every address target in force, per (IP version, action).

    ``refused`` is the overblocking guard's last word before the kernel: a target it
    returns True for is left out (the caller logs it).
    """
    nets: dict[Key, list[Network]] = {k: [] for k in SETS}
    for order, target in policy.entries():
        if target.kind is not TargetKind.DOMAIN:
            if refused is not None and refused(target):
                continue
            net = ipaddress.ip_network(target.value)
            nets[(net.version, actions.get(order.policy, default))].append(net)
    return {k: set(ipaddress.collapse_addresses(n)) for k, n in nets.items()}  # type: ignore[type-var]


def _key(net: Network) -> tuple[int, int]:
    return int(net.network_address), net.prefixlen


def diff(current: Mapping[Key, set[Network]], want: Mapping[Key, set[Network]]
         ) -> list[Change]:
    out = []
    for key in SETS:
        have, need = current.get(key, set()), want.get(key, set())
        out.append(Change(key, tuple(sorted(need - have, key=_key)),
                          tuple(sorted(have - need, key=_key))))
    return out


def _skeleton(batch: Batch, notice: Notice, local_output: bool) -> None:
    batch.add_table()
    for set_id, ((version, _), name) in enumerate(SETS.items(), 1):
        batch.add_set(name, version, set_id=set_id)
    nat_chains = ["prerouting"]
    filter_chains = ["forward"]
    batch.add_chain("prerouting", HOOK_PREROUTING, -100, kind="nat")
    batch.add_chain("input", HOOK_INPUT, 0)
    batch.add_chain("forward", HOOK_FORWARD, 0)
    if local_output:  # the appliance's own traffic too (configurable: nft.local_output)
        batch.add_chain("nat_output", HOOK_OUTPUT, -100, kind="nat")
        batch.add_chain("output", HOOK_OUTPUT, 0)
        nat_chains.append("nat_output")
        filter_chains.append("output")
    for version, address in ((4, notice.ipv4), (6, notice.ipv6)):
        if address is None:
            continue
        name = SETS[(version, NftAction.NOTICE)]
        for chain in nat_chains:
            batch.add_rule(chain, daddr_in_set_rule(
                version, name, [*match_tcp_dport(80), *dnat(address, notice.port)]))
        for chain in ("input", *filter_chains):
            batch.add_rule(chain, [*match_daddr(address), *match_tcp_dport(443),
                                   *reject_tcp_reset()])
    for chain in filter_chains:
        for (version, action), name in SETS.items():
            if action is NftAction.DROP:
                batch.add_rule(chain, daddr_in_set_rule(version, name, drop()))
            else:  # reject, and what of a notice address was not sent to the notice server
                batch.add_rule(chain, daddr_in_set_rule(
                    version, name, [*match_tcp(), *reject_tcp_reset()]))
                batch.add_rule(chain, daddr_in_set_rule(version, name,
                                                        reject_admin_prohibited()))


def plan(changes: list[Change], table_exists: bool, notice: Notice | None = None,
         local_output: bool = False) -> Batch:
    """One batch: the table with its sets, chains and rules if missing, then the element
    diff. Removals go first so a prefix that is split or merged never overlaps itself."""
    batch = Batch(TABLE)
    if not table_exists:
        _skeleton(batch, notice or Notice(None, None), local_output)
    for change in changes:
        if change.remove:
            batch.delete_elements(SETS[change.key], change.remove)
    for change in changes:
        if change.add:
            batch.add_elements(SETS[change.key], change.add)
    return batch
