"""The daemons: `serve dns`, `serve http`, `serve nft`, `serve rpz` (foreground; systemd
runs them)."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable
from pathlib import Path

import click

from blockd.cli.common import (
    App,
    db_option,
    pass_app,
)
from blockd.cli.root import cli
from blockd.config import Address, Config, load_config, parse_address_port
from blockd.core.model import (
    BlockdError,
    InputError,
)
from blockd.core.names import parse_target
from blockd.store.store import Store


@cli.group()
def serve() -> None:
    """Run a daemon in the foreground (systemd runs these)."""


def cli_addresses(values: tuple[str, ...], field: str, default_port: int) -> tuple[Address, ...]:
    try:
        return tuple(parse_address_port(v, field, default_port) for v in values)
    except ValueError as exc:
        raise InputError(field, str(exc).split(": ", 1)[-1]) from None


@serve.command("dns")
@click.option("--listen", multiple=True, metavar="ADDR:PORT",
              help="Address to answer on, UDP and TCP; repeat for several (IPv6 as "
                   "[::1]:5353) [default: configuration's, else 127.0.0.1:5353].")
@click.option("--upstream", multiple=True, metavar="ADDR:PORT",
              help="Resolver to forward unblocked queries to; repeat for several, tried "
                   "in order [default: configuration's].")
@click.option("--allow", multiple=True, metavar="NETWORK",
              help="Client network allowed to query; repeat [default: loopback only].")
@click.option("--workers", type=click.IntRange(1, 256), metavar="N",
              help="Worker processes sharing the ports (SO_REUSEPORT) [default: 1].")
@click.option("--metrics", metavar="ADDR:PORT",
              help="Serve Prometheus /metrics and /healthz here (port 0: any free port; "
                   "with --workers, worker 0 serves every worker's, labelled worker=\"N\") "
                   "[default: configuration's, else off].")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@db_option
@pass_app
def serve_dns_cmd(app: App, listen: tuple[str, ...], upstream: tuple[str, ...],
                  allow: tuple[str, ...], workers: int | None, metrics: str | None,
                  verbose: bool, db: str | None) -> None:
    """The DNS resolver: forwards and caches, answers names under orders in force per
    their policy with EDE 16 (Censored), and follows the journal live."""
    from blockd.daemon.dns import DnsDaemon
    from blockd.daemon.process import run, setup_logging

    listen_a = cli_addresses(listen, "--listen", 5353)
    metrics_a = cli_addresses((metrics,), "--metrics", 9253)[0] if metrics else None
    upstream_a = cli_addresses(upstream, "--upstream", 53)
    try:
        networks = tuple(str(ipaddress.ip_network(n, strict=False)) for n in allow)
    except ValueError as exc:
        raise InputError("--allow", str(exc)) from None

    def make_config() -> Config:
        config = load_config(app.config_path).with_db(db)
        dns = config.dns
        dns = dataclasses.replace(
            dns, listen=listen_a or dns.listen, upstream=upstream_a or dns.upstream,
            allow=networks or dns.allow, workers=workers or dns.workers,
            metrics=metrics_a or dns.metrics)
        return dataclasses.replace(config, dns=dns)

    config = make_config()
    _startable(config, "dns")
    app.policies  # noqa: B018 - validate the policy files before binding any port
    setup_logging(verbose)
    n = config.dns.workers
    if n > 1 and any(port == 0 for _, port in config.dns.listen):
        raise InputError("--workers", "needs explicit listen ports (not 0)")
    raise SystemExit(run(make_config, lambda core, worker: [
        DnsDaemon(core, reuse_port=n > 1, worker=worker, workers=n)], workers=n,
        instance="dns"))


def _metrics_option(default_port: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return click.option(
        "--metrics", metavar="ADDR:PORT",
        help=f"Serve Prometheus /metrics and /healthz here (port 0: any free port; "
             f"{default_port} if none given) [default: configuration's, else off].")


@serve.command("nft")
@_metrics_option(9255)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@db_option
@pass_app
def serve_nft_cmd(app: App, metrics: str | None, verbose: bool, db: str | None) -> None:
    """Keep the kernel's table inet blockd equal to the address orders in force, following
    the journal. On exit the rules stay in place; `blockd nft flush` removes them."""
    from blockd.daemon.nft import NftDaemon
    from blockd.daemon.process import run, setup_logging

    metrics_a = cli_addresses((metrics,), "--metrics", 9255)[0] if metrics else None

    def make_config() -> Config:
        config = load_config(app.config_path).with_db(db)
        return dataclasses.replace(config, nft_metrics=metrics_a or config.nft_metrics)

    _startable(make_config(), "nft")
    app.policies  # noqa: B018 - validate the policy files first
    setup_logging(verbose)
    raise SystemExit(run(make_config, lambda core, _: [NftDaemon(core)], uvloop=False,
                         instance="nft"))


@serve.command("http")
@click.option("--listen", multiple=True, metavar="ADDR:PORT",
              help="Address for the notice pages; repeat for several [default: "
                   "configuration's, else 127.0.0.1:8080].")
@click.option("--tls-listen", metavar="ADDR:PORT",
              help="Also serve HTTPS here, with --cert/--key of the ISP's own notice host.")
@click.option("--cert", type=click.Path(dir_okay=False, path_type=Path),
              help="PEM certificate chain for --tls-listen.")
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path),
              help="PEM private key for --tls-listen.")
@_metrics_option(9254)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@db_option
@pass_app
def serve_http_cmd(app: App, listen: tuple[str, ...], tls_listen: str | None,
                   cert: Path | None, key: Path | None, metrics: str | None, verbose: bool,
                   db: str | None) -> None:
    """The notice server: answers 451 with the orders behind a block, in the subscriber's
    language, for any path on a blocked host; follows the journal live."""
    from blockd.daemon.http import HttpDaemon
    from blockd.daemon.process import run, setup_logging

    listen_a = cli_addresses(listen, "--listen", 8080)
    tls_a = cli_addresses((tls_listen,), "--tls-listen", 443)[0] if tls_listen else None
    metrics_a = cli_addresses((metrics,), "--metrics", 9254)[0] if metrics else None

    def make_config() -> Config:
        config = load_config(app.config_path).with_db(db)
        return dataclasses.replace(
            config, notice_listen=listen_a or config.notice_listen,
            tls_listen=tls_a or config.tls_listen, tls_cert=cert or config.tls_cert,
            tls_key=key or config.tls_key, notice_metrics=metrics_a or config.notice_metrics)

    config = make_config()
    _startable(config, "http")
    app.policies  # noqa: B018 - validate the policy files before binding any port
    setup_logging(verbose)
    raise SystemExit(run(make_config, lambda core, _: [HttpDaemon(core)], instance="http"))


@serve.command("rpz")
@click.option("--listen", multiple=True, metavar="ADDR:PORT",
              help="Address to serve the policy zone on, UDP and TCP; repeat for several "
                   "(port 0: any free port) [default: configuration's, else 127.0.0.1:5354].")
@click.option("--zone", metavar="NAME", help="The policy zone's name [default: "
              "configuration's [rpz] zone, else rpz.blockd].")
@click.option("--notify", multiple=True, metavar="ADDR:PORT",
              help="Secondary to send NOTIFY to after every change; repeat [default: "
                   "configuration's, else none].")
@click.option("--allow-transfer", multiple=True, metavar="PREFIX",
              help="Network allowed to query and transfer the zone (REFUSED otherwise); "
                   "repeat [default: configuration's, else loopback only].")
@click.option("--tsig-key", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Key file as tsig-keygen writes it (hmac-sha256): transfers must be "
                   "signed with it, NOTIFY is [default: configuration's, else none].")
@_metrics_option(9256)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@db_option
@pass_app
def serve_rpz_cmd(app: App, listen: tuple[str, ...], zone: str | None,
                  notify: tuple[str, ...], allow_transfer: tuple[str, ...],
                  tsig_key: Path | None, metrics: str | None, verbose: bool,
                  db: str | None) -> None:
    """The RPZ primary: serves the targets of the orders in force as a response policy
    zone (AXFR, IXFR), NOTIFYs the secondaries after every change, and follows the
    journal and the clock live."""
    from blockd.daemon.process import run, setup_logging
    from blockd.daemon.rpz import RpzDaemon
    from blockd.rpz.primary import TsigKey

    listen_a = cli_addresses(listen, "--listen", 5354)
    notify_a = cli_addresses(notify, "--notify", 53)
    metrics_a = cli_addresses((metrics,), "--metrics", 9256)[0] if metrics else None
    try:
        networks = tuple(str(ipaddress.ip_network(n, strict=False)) for n in allow_transfer)
    except ValueError as exc:
        raise InputError("--allow-transfer", str(exc)) from None
    origin = parse_target(zone.rstrip("."), "--zone").value + "." if zone else None
    if tsig_key is not None:
        TsigKey.load(tsig_key)  # one line naming the file now, not at the first transfer

    def make_config() -> Config:
        config = load_config(app.config_path).with_db(db)
        return dataclasses.replace(
            config, rpz_listen=listen_a or config.rpz_listen,
            rpz_zone=origin or config.rpz_zone, rpz_notify=notify_a or config.rpz_notify,
            rpz_allow_transfer=networks or config.rpz_allow_transfer,
            rpz_tsig_key=tsig_key or config.rpz_tsig_key,
            rpz_metrics=metrics_a or config.rpz_metrics)

    config = make_config()
    if config.rpz_tsig_key is not None:
        TsigKey.load(config.rpz_tsig_key)
    _startable(config, "rpz")
    app.policies  # noqa: B018 - validate the policy files before binding any port
    setup_logging(verbose)
    raise SystemExit(run(make_config, lambda core, _: [RpzDaemon(core)], instance="rpz"))


def _startable(config: Config, instance: str) -> None:
    """Fail now, with one clear line, if the daemon could start from neither the store
    nor its snapshot of the last good policy (the core would find the same later)."""
    from blockd.core.model import InputError
    from blockd.store.engine import is_postgres
    from blockd.store.snapshot import snapshot_path

    if is_postgres(config.db) and config.state_dir is None:  # not ./var/state by chance
        raise InputError("store.state_dir", "must be set when the store is PostgreSQL "
                         "(there is no database file to keep the daemons' snapshots "
                         "beside)")
    try:
        Store.open(config.db).close()
    except BlockdError as exc:
        if not snapshot_path(config.state_path(), instance).exists():
            raise BlockdError(f"cannot start: {exc}; and no snapshot of the last good "
                              f"policy in {config.state_path()}") from None
