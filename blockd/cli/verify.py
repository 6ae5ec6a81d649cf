"""`blockd verify`: an active self-test of the running services, stored for reports."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import click

from blockd.cli.common import App, _index_at, db_option, emit, json_option, now, pass_app
from blockd.cli.root import cli
from blockd.cli.serve import cli_addresses
from blockd.config import Address
from blockd.core.model import InputError, OrderRecord, Target
from blockd.probe import (
    Check,
    check_dns,
    check_http,
    check_nft,
    is_address,
    loopback_for,
    probe_names,
)

SAMPLE_DEFAULT = 200  # targets checked when there are more and no --sample is given
FAILURES_KEPT = 50


@cli.command()
@click.argument("references", nargs=-1, metavar="[REF]...")
@click.option("--dns", "dns_at", metavar="ADDR:PORT",
              help="The resolver to ask [default: the first [dns] listen address].")
@click.option("--http", "http_at", metavar="ADDR:PORT",
              help="The notice server to ask [default: the first [notice] listen address].")
@click.option("--nft/--no-nft", "nft_mode", default=None,
              help="Check address targets in the kernel's sets (read only; needs "
                   "CAP_NET_ADMIN) [default: when the table inet blockd exists].")
@click.option("--sample", type=click.IntRange(min=0), metavar="N",
              help=f"Check N random targets (0: all) [default: all up to {SAMPLE_DEFAULT}, "
                   f"else {SAMPLE_DEFAULT}].")
@click.option("--textfile", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Also write the result as Prometheus metrics to FILE (atomically), for "
                   "node_exporter's textfile collector: docs/prometheus-alerts.yml alerts "
                   "on failures and on runs that stop.")
@db_option
@json_option
@pass_app
def verify(app: App, references: tuple[str, ...], dns_at: str | None, http_at: str | None,
           nft_mode: bool | None, sample: int | None, textfile: Path | None, db: str | None,
           as_json: bool) -> None:
    """Prove that the running services enforce the orders in force (all, or REFs).

    For each domain target (and one random subdomain of it) the resolver must give the
    policy's blocked answer with EDE 16 naming the order and the notice server must
    answer 451 naming it; each address target must be in the kernel's sets. Exit 1 on any
    failure, naming the target. Each run is stored: `blockd report` cites the last one.
    A systemd timer runs it hourly (systemd/blockd-verify.timer).
    """
    config = app.config
    dns_server = loopback_for(cli_addresses((dns_at,), "--dns", 53)[0] if dns_at
                              else config.dns.listen[0])
    http_server = loopback_for(cli_addresses((http_at,), "--http", 80)[0] if http_at
                               else config.notice_listen[0])
    store = app.store(db)
    at = now()
    index = _index_at(app, store, at)
    wanted = set(references)
    for ref in wanted:
        if ref not in index.orders:
            store.get_order(ref, with_targets=False)  # unknown: "reference: no order ..."
            raise InputError("REF", f"order {ref} is not in force now: nothing to verify")
    pairs = [(o, t) for o, t in index.entries() if not wanted or o.reference in wanted]
    total = len(pairs)
    limit = SAMPLE_DEFAULT if sample is None else sample
    sampled = 0 < limit < total
    if sampled:
        pairs = random.sample(pairs, limit)
    checks, skipped = _run(app, store, pairs, dns_server, http_server, nft_mode)
    failed = [c for c in checks if not c.ok]
    orders: dict[str, list[int]] = {}
    for c in checks:
        counts = orders.setdefault(c.reference, [0, 0])
        counts[0 if c.ok else 1] += 1
    head = store.head()
    run_id = store.record_verify(at, head, len(checks), len(failed), sampled, {
        "orders": orders, "failures": [c.as_dict() for c in failed[:FAILURES_KEPT]],
        "targets": len(pairs), "targets_in_force": total})
    data = {"id": run_id, "at": at.isoformat(), "journal_seq": head.seq if head else 0,
            "passed": len(checks) - len(failed), "failed": len(failed),
            "targets": len(pairs), "targets_in_force": total, "sampled": sampled,
            "nft_not_checked": skipped, "checks": [c.as_dict() for c in checks]}
    if textfile is not None:
        write_textfile(textfile, at.timestamp(), len(checks) - len(failed), len(failed),
                       skipped)
    emit(as_json, data, lambda: _text(checks, len(pairs), total, sampled, skipped))
    if failed:
        raise click.exceptions.Exit(1)


def write_textfile(path: Path, at: float, passed: int, failed: int, skipped: int) -> None:
    """The run as Prometheus text (prometheus_client writes it atomically)."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    Gauge("blockd_verify_last_run_timestamp_seconds", "When blockd verify last ran",
          registry=registry).set(at)
    checks = Gauge("blockd_verify_checks", "Checks of the last blockd verify run",
                   ["result"], registry=registry)
    checks.labels("pass").set(passed)
    checks.labels("fail").set(failed)
    Gauge("blockd_verify_targets_not_checked",
          "Address targets the last run could not check (no nftables table)",
          registry=registry).set(skipped)
    if not str(path).strip() or not path.name:
        raise InputError("--textfile", "must name a file")
    try:
        write_to_textfile(str(path), registry)
    except OSError as exc:
        raise InputError("--textfile", f"cannot write {path}: {exc.strerror}") from None


def _run(app: App, store: Any, pairs: list[tuple[OrderRecord, Target]], dns_server: Address,
         http_server: Address, nft_mode: bool | None) -> tuple[list[Check], int]:
    """The checks, and how many address targets were not checked (no nft in use)."""
    checks: list[Check] = []
    skipped = 0
    addresses = [(o, t) for o, t in pairs if is_address(t)]
    kernel, refused, nft_note = _kernel(app, store, addresses, nft_mode)
    for order, target in pairs:
        if is_address(target):
            if kernel is not None:
                checks.append(check_nft(order, target, kernel, refused(target)))
            elif nft_note:
                checks.append(Check(order.reference, target.spec, target.value, "nft", False,
                                    nft_note))
            else:
                skipped += 1
            continue
        policy = app.policies.get(order.policy) or app.policies["default"]
        for name in probe_names(target):
            checks.append(check_dns(dns_server, order, target, name, policy,
                                    app.config.notice_ipv4))
            checks.append(check_http(http_server, order, target, name))
    return checks, skipped


def _kernel(app: App, store: Any, addresses: list[tuple[OrderRecord, Target]],
            nft_mode: bool | None) -> tuple[Any, Any, str]:
    """(kernel prefixes per IP version or None, the guard's refuser, why not checked)."""
    if not addresses or nft_mode is False:
        return None, None, ""
    from blockd.nft import netlink, ruleset
    from blockd.nft.guarded import refuser

    try:
        names = netlink.existing_sets(ruleset.TABLE)
        if not names:
            return None, None, ("nftables table inet blockd does not exist (is blockd-nft "
                                "running?)" if nft_mode else "")
        kernel: dict[int, list[Any]] = {4: [], 6: []}
        for (version, _), name in ruleset.SETS.items():
            if name in names:
                kernel[version] += list(netlink.read_set(ruleset.TABLE, name, version))
    except netlink.NftError as exc:
        return None, None, f"cannot read nftables: {exc}" if nft_mode else ""
    return kernel, refuser(app.guard, store.forced_targets()), ""


def _text(checks: list[Check], targets: int, total: int, sampled: bool, skipped: int) -> str:
    lines = [f"{'PASS' if c.ok else 'FAIL'}  {c.channel:<4} {c.subject}  ({c.reference}): "
             f"{c.detail}" for c in checks]
    failed = sum(1 for c in checks if not c.ok)
    scope = (f"{targets} of {total} targets in force (a random sample; --sample 0 checks "
             "all)" if sampled else f"{targets} targets in force")
    lines.append(f"{len(checks) - failed} passed, {failed} failed: {scope}")
    if skipped:
        lines.append(f"{skipped} address targets not checked: nftables is not in use here "
                     "(no table inet blockd; --nft requires it)")
    if not checks and not skipped:
        lines[-1] = "nothing to verify: no order is in force"
    return "\n".join(lines)
