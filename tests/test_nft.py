"""nftables over netlink, in network namespaces the tests create (never the host's rules).

`nft -j list ruleset` inside the namespace is the oracle for what blockd put there.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Runner

_names = itertools.count()


def host_ruleset() -> str:
    return subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"blockd-test-{os.getpid()}-{next(_names)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def in_ns(ns: str, *cmd: str, db: Path | None = None, check: bool = True
          ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("BLOCKD_CONFIG", None)
    if db is not None:
        env["BLOCKD_DB"] = str(db)
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                          env=env, check=check)


def blockd_ns(ns: str, db: Path, *args: str, check: bool = True
              ) -> subprocess.CompletedProcess[str]:
    return in_ns(ns, sys.executable, "-m", "blockd", *args, db=db, check=check)


def oracle(ns: str) -> dict[str, object]:
    """Sets (with their elements) and rules of table inet blockd as nft reports them."""
    data = json.loads(in_ns(ns, "nft", "-j", "list", "ruleset").stdout)["nftables"]
    sets: dict[str, list[str]] = {}
    rules: list[str] = []
    tables = []
    for item in data:
        if "table" in item:
            tables.append((item["table"]["family"], item["table"]["name"]))
        if "set" in item:
            elems = []
            for e in item["set"].get("elem", []):
                val = e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e
                if isinstance(val, dict) and "prefix" in val:
                    val = f"{val['prefix']['addr']}/{val['prefix']['len']}"
                elems.append(str(val))
            sets[item["set"]["name"]] = sorted(elems)
        if "rule" in item:
            rules.append(json.dumps(item["rule"]["expr"]))
    return {"tables": tables, "sets": sets, "rules": rules}


def add_order(blockd: Runner, ref: str, *targets: str) -> None:
    r = blockd("order", "add", ref, "--authority", "Juzgado Mercantil", "--issued",
               "2025-02-01", *targets)
    assert r.code == 0, r.err


def test_apply_creates_table_sets_and_rules(blockd: Runner, db: Path, netns: str) -> None:
    before = host_ruleset()
    assert blockd("init").code == 0
    add_order(blockd, "ES-1", "45.33.32.0/24", "45.33.32.156", "93.184.216.34", "2a01:4f8::/48")
    dry = blockd_ns(netns, db, "nft", "apply", "--dry-run", "--json")
    assert json.loads(dry.stdout)["add"] == ["45.33.32.0/24", "93.184.216.34/32",
                                             "2a01:4f8::/48"]
    assert oracle(netns)["tables"] == []  # dry run: nothing in the kernel
    blockd_ns(netns, db, "nft", "apply")
    state = oracle(netns)
    assert state["tables"] == [("inet", "blockd")]
    assert state["sets"] == {"block_v4": ["45.33.32.0/24", "93.184.216.34"],
                             "block_v6": ["2a01:4f8::/48"]}
    rules = state["rules"]
    assert len(rules) == 2 and all('"drop"' in r and '"counter"' in r for r in rules)
    assert '"@block_v4"' in rules[0] and '"@block_v6"' in rules[1]
    again = json.loads(blockd_ns(netns, db, "nft", "apply", "--json").stdout)
    assert again["add"] == [] and again["remove"] == []  # idempotent
    assert host_ruleset() == before  # the host's own rules are never touched


def test_orders_added_and_lifted_change_the_sets(blockd: Runner, db: Path, netns: str) -> None:
    assert blockd("init").code == 0
    add_order(blockd, "ES-1", "45.33.32.0/24")
    blockd_ns(netns, db, "nft", "apply")
    add_order(blockd, "ES-2", "93.184.216.34", "2a01:4f8:1::/48")
    out = json.loads(blockd_ns(netns, db, "nft", "apply", "--json").stdout)
    assert out["add"] == ["93.184.216.34/32", "2a01:4f8:1::/48"] and out["remove"] == []
    assert blockd("order", "lift", "ES-1", "--reason", "match over").code == 0
    out = json.loads(blockd_ns(netns, db, "nft", "apply", "--json").stdout)
    assert out["remove"] == ["45.33.32.0/24"]
    assert oracle(netns)["sets"] == {"block_v4": ["93.184.216.34"],
                                     "block_v6": ["2a01:4f8:1::/48"]}
    shown = json.loads(blockd_ns(netns, db, "nft", "show", "--json").stdout)
    assert {r["prefix"] for r in shown if r["in_kernel"] and r["wanted"]} == {
        "93.184.216.34/32", "2a01:4f8:1::/48"}
    blockd_ns(netns, db, "nft", "flush")
    assert oracle(netns)["tables"] == []


def test_a_failing_batch_changes_nothing(blockd: Runner, db: Path, netns: str) -> None:
    assert blockd("init").code == 0
    add_order(blockd, "ES-1", "45.33.32.0/24")
    blockd_ns(netns, db, "nft", "apply")
    script = textwrap.dedent("""
        import ipaddress
        from blockd.nft import netlink
        b = netlink.Batch("blockd")
        b.add_elements("block_v4", [ipaddress.ip_network("93.184.216.0/24")])
        b.add_elements("no_such_set", [ipaddress.ip_network("93.184.217.0/24")])
        try:
            netlink.apply(b)
        except netlink.NftError as exc:
            print("refused:", exc)
    """)
    out = in_ns(netns, sys.executable, "-c", script).stdout
    assert out.startswith("refused: nftables: the kernel refused the change")
    assert oracle(netns)["sets"]["block_v4"] == ["45.33.32.0/24"]  # first half not applied


def test_without_cap_net_admin_the_error_is_clear(blockd: Runner, db: Path,
                                                  netns: str) -> None:
    assert blockd("init").code == 0
    add_order(blockd, "ES-1", "45.33.32.0/24")
    r = in_ns(netns, "setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-net_admin",
              sys.executable, "-m", "blockd", "nft", "apply", db=db, check=False)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (
        "blockd: error: nftables: permission denied (needs root or CAP_NET_ADMIN)")
