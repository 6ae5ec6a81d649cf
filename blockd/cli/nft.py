"""Address orders in the kernel: `nft apply`, `nft show`, `nft flush`."""

from __future__ import annotations

from typing import Any

import click

from blockd.cli.common import (
    App,
    _index_at,
    db_option,
    emit,
    json_option,
    now,
    pass_app,
)
from blockd.cli.progress import Steps
from blockd.cli.root import cli

READING_ORDERS, READING_KERNEL, APPLYING = "reading orders", "reading the kernel", "applying"

@cli.group()
def nft() -> None:
    """Put address and prefix orders into the kernel's nftables (table inet blockd).

    Talks to the kernel over netlink; needs root or CAP_NET_ADMIN. Only the table
    `inet blockd` is ever touched.
    """


def _nft_state(app: App, db: str | None, steps: Steps | None = None
               ) -> tuple[Any, Any, bool]:
    """(wanted, in the kernel, table exists) per (IP version, action) set."""
    from blockd.nft import netlink, ruleset
    from blockd.nft.guarded import refuser

    if steps is not None:
        steps.step(READING_ORDERS)
    store = app.store(db)
    actions = {name: p.nft_action for name, p in app.policies.items()}
    want = ruleset.desired(_index_at(app, store, now()), actions,
                           refused=refuser(app.guard, store.forced_targets()))
    if steps is not None:
        steps.step(READING_KERNEL)
    names = netlink.existing_sets(ruleset.TABLE)
    current = {key: netlink.read_set(ruleset.TABLE, name, key[0]) if name in names else {}
               for key, name in ruleset.SETS.items()}
    return want, current, bool(names)


@nft.command("apply")
@click.option("--dry-run", is_flag=True, help="Print the difference, change nothing.")
@db_option
@json_option
@pass_app
def nft_apply(app: App, dry_run: bool, db: str | None, as_json: bool) -> None:
    """Make the kernel match the orders in force: compute the difference, print it, and
    apply it in one atomic batch. Running it again changes nothing.

    Each order's policy says what happens to traffic for its addresses ([nft] action):
    drop, reject (TCP reset / ICMP admin-prohibited), or notice (TCP port 80 to the notice
    server, the rest rejected). TCP 443 to the notice address is refused at once.
    """
    from blockd.nft import netlink, reconcile, ruleset

    with Steps("nft apply", [READING_ORDERS, READING_KERNEL, APPLYING]) as steps:
        want, current, exists = _nft_state(app, db, steps)
        changes = ruleset.diff({k: set(v) for k, v in current.items()}, want)
        if not dry_run:
            steps.step(APPLYING)
            netlink.apply(ruleset.plan(changes, exists, reconcile.notice_of(app.config),
                                       app.config.nft_local_output))
    data: dict[str, Any] = {
        "table_created": not exists and not dry_run, "dry_run": dry_run,
        "add": [{"prefix": str(n), "action": c.key[1].value} for c in changes for n in c.add],
        "remove": [{"prefix": str(n), "action": c.key[1].value}
                   for c in changes for n in c.remove]}

    def text() -> str:
        lines = [f"+ {d['prefix']} ({d['action']})" for d in data["add"]] + \
            [f"- {d['prefix']} ({d['action']})" for d in data["remove"]]
        verb = "would change" if dry_run else "applied"
        return "\n".join([*lines, f"{verb}: {len(data['add'])} added, "
                                   f"{len(data['remove'])} removed"])

    emit(as_json, data, text)


@nft.command("show")
@db_option
@json_option
@pass_app
def nft_show(app: App, db: str | None, as_json: bool) -> None:
    """What the kernel holds against what it should, with per-prefix packet counters."""
    want, current, _ = _nft_state(app, db)
    rows = []
    for key in sorted(want, key=lambda k: (k[0], k[1].value)):
        kernel = current[key]
        for net in sorted(set(kernel) | want[key], key=str):
            packets, bytes_ = kernel.get(net, (0, 0))
            rows.append({"prefix": str(net), "action": key[1].value, "in_kernel": net in kernel,
                         "wanted": net in want[key], "packets": packets, "bytes": bytes_})
    emit(as_json, rows, lambda: "\n".join(
        [f"{'PREFIX':<40} {'ACTION':<7} {'KERNEL':<7} {'WANTED':<7} {'PACKETS':>9}"]
        + [f"{r['prefix']:<40} {r['action']:<7} {'yes' if r['in_kernel'] else 'no':<7} "
           f"{'yes' if r['wanted'] else 'no':<7} {r['packets']:>9}" for r in rows]))


@nft.command("flush")
def nft_flush() -> None:
    """Remove table inet blockd from the kernel (enforcement of address orders stops)."""
    from blockd.nft import netlink, ruleset

    batch = netlink.Batch(ruleset.TABLE)
    batch.delete_table()
    try:
        netlink.apply(batch)
    except netlink.NftMissing:
        click.echo("table inet blockd was not there")
        return
    click.echo("table inet blockd removed")
