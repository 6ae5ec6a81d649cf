"""nftables over netlink, in network namespaces the tests create (never the host's rules).

`nft -j list ruleset` inside the namespace is the oracle for what blockd put there.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import Runner

from blockd.config import default_policies_dir

pytestmark = pytest.mark.root  # every test here creates network namespaces

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
            if elems:
                sets[item["set"]["name"]] = sorted(elems)
        if "rule" in item:
            rules.append(json.dumps(item["rule"]["expr"]))
    return {"tables": tables, "sets": sets, "rules": rules}


def add_order(blockd: Runner, ref: str, *targets: str) -> None:
    """An order of a Spanish commercial court (address lists of match days)."""
    r = blockd("order", "add", ref, "--authority", "Juzgado Mercantil", "--issued",
               "2025-02-01", *targets)
    assert r.code == 0, r.err


def test_apply_creates_table_sets_and_rules(blockd: Runner, db: Path, netns: str) -> None:
    before = host_ruleset()
    assert blockd("init").code == 0
    add_order(blockd, "ES-1", "45.33.32.0/24", "45.33.32.156", "93.184.216.34", "2a01:4f8::/48")
    dry = blockd_ns(netns, db, "nft", "apply", "--dry-run", "--json")
    assert [a["prefix"] for a in json.loads(dry.stdout)["add"]] == [
        "45.33.32.0/24", "93.184.216.34/32", "2a01:4f8::/48"]
    assert oracle(netns)["tables"] == []  # dry run: nothing in the kernel
    blockd_ns(netns, db, "nft", "apply")
    state = oracle(netns)
    assert state["tables"] == [("inet", "blockd")]
    assert state["sets"] == {"v4_reject": ["45.33.32.0/24", "93.184.216.34"],
                             "v6_reject": ["2a01:4f8::/48"]}
    rules = "\n".join(state["rules"])  # type: ignore[arg-type]
    assert '"@v4_reject"' in rules and '"@v6_reject"' in rules and '"@v4_drop"' in rules
    assert '"tcp reset"' in rules and '"admin-prohibited"' in rules
    again = json.loads(blockd_ns(netns, db, "nft", "apply", "--json").stdout)
    assert again["add"] == [] and again["remove"] == []  # idempotent
    assert host_ruleset() == before  # the host's own rules are never touched


def test_orders_added_and_lifted_change_the_sets(blockd: Runner, db: Path, netns: str) -> None:
    assert blockd("init").code == 0
    add_order(blockd, "ES-1", "45.33.32.0/24")
    blockd_ns(netns, db, "nft", "apply")
    add_order(blockd, "ES-2", "93.184.216.34", "2a01:4f8:1::/48")
    out = json.loads(blockd_ns(netns, db, "nft", "apply", "--json").stdout)
    assert [a["prefix"] for a in out["add"]] == ["93.184.216.34/32", "2a01:4f8:1::/48"]
    assert out["remove"] == []
    assert blockd("order", "lift", "ES-1", "--reason", "match over").code == 0
    out = json.loads(blockd_ns(netns, db, "nft", "apply", "--json").stdout)
    assert out["remove"] == [{"prefix": "45.33.32.0/24", "action": "reject"}]
    assert oracle(netns)["sets"] == {"v4_reject": ["93.184.216.34"],
                                     "v6_reject": ["2a01:4f8:1::/48"]}
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
        b.add_elements("v4_reject", [ipaddress.ip_network("93.184.216.0/24")])
        b.add_elements("no_such_set", [ipaddress.ip_network("93.184.217.0/24")])
        try:
            netlink.apply(b)
        except netlink.NftError as exc:
            print("refused:", exc)
    """)
    out = in_ns(netns, sys.executable, "-c", script).stdout
    assert out.startswith("refused: nftables: the kernel refused the change")
    assert oracle(netns)["sets"]["v4_reject"] == ["45.33.32.0/24"]  # first half not applied


def test_without_cap_net_admin_the_error_is_clear(blockd: Runner, db: Path,
                                                  netns: str) -> None:
    assert blockd("init").code == 0
    add_order(blockd, "ES-1", "45.33.32.0/24")
    r = in_ns(netns, "setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-net_admin",
              sys.executable, "-m", "blockd", "nft", "apply", db=db, check=False)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (
        "blockd: error: nftables: permission denied (needs root or CAP_NET_ADMIN)")


def test_serve_nft_follows_the_journal(blockd: Runner, db: Path, netns: str,
                                       tmp_path: Path) -> None:
    assert blockd("init").code == 0
    add_order(blockd, "ES-1", "45.33.32.0/24")
    env = {**os.environ, "BLOCKD_DB": str(db)}
    env.pop("BLOCKD_CONFIG", None)
    log = (tmp_path / "nft.log").open("w+")
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-m", "blockd",
                             "serve", "nft", "--metrics", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "follows the journal" in line
        assert oracle(netns)["sets"]["v4_reject"] == ["45.33.32.0/24"]
        url = line.split("metrics ", 1)[1].strip()  # inside the namespace
        metrics = in_ns(netns, sys.executable, "-c", textwrap.dedent(f"""
            import urllib.request
            print(urllib.request.urlopen({url!r}, timeout=3).read().decode())""")).stdout
        assert re.search(r'^blockd_nft_elements\{set="v4_reject"\} 1\.0$', metrics, re.M)
        assert re.search(r"^blockd_nft_applies_total 1\.0$", metrics, re.M)
        assert re.search(r"^blockd_store_healthy 1\.0$", metrics, re.M)

        def within(second: float, want: dict[str, list[str]]) -> None:
            start = time.monotonic()
            while oracle(netns)["sets"] != want:
                assert time.monotonic() - start < second, oracle(netns)["sets"]
                time.sleep(0.05)

        add_order(blockd, "ES-2", "93.184.216.34", "2a01:4f8::/48")
        within(1.0, {"v4_reject": ["45.33.32.0/24", "93.184.216.34"],
                     "v6_reject": ["2a01:4f8::/48"]})
        assert blockd("order", "lift", "ES-1", "--reason", "match over").code == 0
        within(1.0, {"v4_reject": ["93.184.216.34"], "v6_reject": ["2a01:4f8::/48"]})
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
        log.close()
    assert proc.returncode == 0
    # enforcement survives the daemon: the rules stay until flushed deliberately
    assert oracle(netns)["sets"]["v4_reject"] == ["93.184.216.34"]
    # the timeline holds when the kernel first matched each order, once
    show = json.loads(blockd("order", "show", "ES-2", "--json").out)
    [nft] = show["enforcement"]["channels"]
    assert nft["channel"] == "nft" and nft["instances"] == ["nft"] and nft["since"]
    assert nft["verdict"] == "none"  # the default policy sets no deadline
    since = datetime.fromisoformat(nft["since"])
    assert datetime.fromisoformat(show["received_at"]) <= since <= datetime.now(UTC)


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def network() -> Iterator[dict[str, str]]:
    """subscriber --veth-- appliance (router, blockd nft) --veth-- internet host.

    Addresses are test data inside namespaces this test creates: the "internet" host
    holds 93.184.216.34 (to be blocked) and 93.184.216.35 (not blocked)."""
    tag = f"{os.getpid() % 10000}{next(_names)}"
    ns = {"sub": f"bd-sub-{tag}", "app": f"bd-app-{tag}", "net": f"bd-net-{tag}"}
    for name in ns.values():
        sh("ip", "netns", "add", name)
    try:
        sh("ip", "link", "add", f"bs{tag}", "netns", ns["sub"], "type", "veth", "peer",
           "name", f"ba{tag}", "netns", ns["app"])
        sh("ip", "link", "add", f"bn{tag}", "netns", ns["net"], "type", "veth", "peer",
           "name", f"bb{tag}", "netns", ns["app"])
        plan = [
            (ns["sub"], f"bs{tag}", "100.64.0.2/24"), (ns["app"], f"ba{tag}", "100.64.0.1/24"),
            (ns["app"], f"bb{tag}", "100.65.0.1/24"), (ns["net"], f"bn{tag}", "100.65.0.2/24"),
        ]
        for name, dev, addr in plan:
            sh("ip", "-n", name, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", name, "link", "set", dev, "up")
            sh("ip", "-n", name, "link", "set", "lo", "up")
        for extra in ("93.184.216.34/32", "93.184.216.35/32", "93.184.216.36/32",
                      "93.184.216.38/32"):
            sh("ip", "-n", ns["net"], "addr", "add", extra, "dev", "lo")
        sh("ip", "-n", ns["sub"], "route", "add", "default", "via", "100.64.0.1")
        sh("ip", "-n", ns["net"], "route", "add", "default", "via", "100.65.0.1")
        sh("ip", "-n", ns["app"], "route", "add", "93.184.216.32/28", "via", "100.65.0.2")
        sh("ip", "netns", "exec", ns["app"], "sysctl", "-qw", "net.ipv4.ip_forward=1")
        yield ns
    finally:
        for name in ns.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_end_to_end_drop_reject_and_notice(
        blockd: Runner, db: Path, network: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Across a real router: a drop order times out, a reject order is refused at once,
    the unblocked address connects, and port 80 of a notice order's address reaches the
    notice server on the appliance (DNAT) and gets 451; 443 to the notice address is reset."""
    policies = tmp_path / "policies"
    shutil.copytree(default_policies_dir(), policies)
    (policies / "es.toml").write_text('jurisdiction = "ES"\n[nft]\naction = "drop"\n')
    config = tmp_path / "blockd.toml"
    config.write_text(f'[policies]\ndir = "{policies}"\n[notice]\nipv4 = "100.64.0.1"\n'
                      'listen = ["100.64.0.1:8080"]\n')
    monkeypatch.setenv("BLOCKD_CONFIG", str(config))
    assert blockd("init").code == 0
    add_order(blockd, "ES-1", "93.184.216.36", "--policy", "es")
    add_order(blockd, "DE-1", "93.184.216.34", "--policy", "de")  # reject
    add_order(blockd, "UK-1", "93.184.216.38", "--policy", "uk")  # notice
    env = {**os.environ, "BLOCKD_DB": str(db), "BLOCKD_CONFIG": str(config)}
    subprocess.run(["ip", "netns", "exec", network["app"], sys.executable, "-m", "blockd",
                    "nft", "apply"], check=True, env=env, capture_output=True)
    servers = subprocess.Popen(
        ["ip", "netns", "exec", network["net"], sys.executable, "-c", textwrap.dedent("""
            import socket, threading
            def serve(addr, port):
                s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((addr, port)); s.listen()
                while True:
                    c, _ = s.accept(); c.sendall(b"hello from " + addr.encode()); c.close()
            for a in ("93.184.216.34", "93.184.216.35", "93.184.216.36", "93.184.216.38"):
                for port in (80, 8000):
                    threading.Thread(target=serve, args=(a, port), daemon=True).start()
            print("ready", flush=True)
            threading.Event().wait()
        """)], stdout=subprocess.PIPE, text=True)
    log = (tmp_path / "http.log").open("w+")
    notice = subprocess.Popen(
        ["ip", "netns", "exec", network["app"], sys.executable, "-m", "blockd", "serve",
         "http"], stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    probe = textwrap.dedent("""
        import socket, sys
        addr, port = sys.argv[1], int(sys.argv[2])
        try:
            with socket.create_connection((addr, port), timeout=1.5) as c:
                c.sendall(b"GET / HTTP/1.1\\r\\nHost: mirror.example\\r\\n"
                          b"Connection: close\\r\\n\\r\\n")
                print(c.recv(200).decode(errors="replace").splitlines()[0])
        except OSError as exc:
            print("failed:", type(exc).__name__)
    """)

    def connect(addr: str, port: int) -> str:
        return in_ns(network["sub"], sys.executable, "-c", probe, addr, str(port)).stdout.strip()

    try:
        assert servers.stdout is not None and servers.stdout.readline().strip() == "ready"
        assert notice.stdout is not None and "listening on" in notice.stdout.readline()
        assert connect("93.184.216.35", 8000) == "hello from 93.184.216.35"
        assert connect("93.184.216.36", 8000) == "failed: TimeoutError"  # drop
        assert connect("93.184.216.34", 8000) == "failed: ConnectionRefusedError"  # reject
        assert connect("93.184.216.38", 8000) == "failed: ConnectionRefusedError"
        assert connect("93.184.216.38", 80) == "HTTP/1.1 451 Unavailable For Legal Reasons"
        assert connect("100.64.0.1", 443) == "failed: ConnectionRefusedError"
        shown = json.loads(subprocess.run(
            ["ip", "netns", "exec", network["app"], sys.executable, "-m", "blockd", "nft",
             "show", "--json"], check=True, env=env, capture_output=True, text=True).stdout)
        counted = {r["prefix"]: r["packets"] for r in shown}
        assert counted["93.184.216.36/32"] >= 1 and counted["93.184.216.34/32"] >= 1
    finally:
        for proc in (servers, notice):
            proc.kill()
            proc.communicate()
        log.close()


def test_the_guard_has_the_last_word_before_the_kernel(
        blockd: Runner, db: Path, netns: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A forced target reaches the kernel; one the guard refuses today (the protected
    list grew after the order was recorded) does not, and the refusal is logged."""
    assert blockd("init").code == 0
    add_order(blockd, "ES-1", "45.33.32.0/24", "93.184.216.34")
    r = blockd("order", "add", "ES-2", "--authority", "Juzgado", "--issued", "2025-02-01",
               "8.8.8.8", "--force", "--justification", "the order names this address")
    assert r.code == 0, r.err
    policies = tmp_path / "policies"
    shutil.copytree(default_policies_dir(), policies)
    with (policies / "protected-networks.txt").open("a") as f:
        f.write("45.33.32.0/24   # a shared hosting network, added after the order\n")
    config = tmp_path / "blockd.toml"
    config.write_text(f'[policies]\ndir = "{policies}"\n')
    env = {**os.environ, "BLOCKD_DB": str(db), "BLOCKD_CONFIG": str(config)}
    done = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-m", "blockd",
                           "nft", "apply"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert oracle(netns)["sets"] == {"v4_reject": ["8.8.8.8", "93.184.216.34"]}


def test_element_counters_become_hits(blockd: Runner, db: Path, network: dict[str, str],
                                      tmp_path: Path) -> None:
    assert blockd("init").code == 0
    add_order(blockd, "DE-1", "93.184.216.34", "--policy", "de")
    env = {**os.environ, "BLOCKD_DB": str(db)}
    env.pop("BLOCKD_CONFIG", None)
    log = (tmp_path / "nft.log").open("w+")
    daemon = subprocess.Popen(["ip", "netns", "exec", network["app"], sys.executable, "-m",
                               "blockd", "serve", "nft", "--metrics", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    try:
        assert daemon.stdout is not None
        line = daemon.stdout.readline()
        assert "follows" in line
        knock = "import socket\nfor _ in range(3):\n    try:\n        socket.create_connection(" \
                "('93.184.216.34', 8000), timeout=1).close()\n    except OSError:\n        pass\n"
        in_ns(network["sub"], sys.executable, "-c", knock)
        from blockd.store.store import Store

        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            hits = {t: n for _, _, t, n in Store.open(str(db)).hits("DE-1")}
            if hits.get("93.184.216.34", 0) >= 3:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"no hits from the nftables counters: {hits}")
        url = line.split("metrics ", 1)[1].strip()  # inside the appliance's namespace
        metrics = in_ns(network["app"], sys.executable, "-c", textwrap.dedent(f"""
            import urllib.request
            print(urllib.request.urlopen({url!r}, timeout=3).read().decode())""")).stdout
        packets = re.findall(r'^blockd_nft_packets_total\{set="v4_\w+"\} (\S+)$', metrics,
                             re.M)
        assert sum(float(p) for p in packets) >= 3, metrics
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=15)
        log.close()
    assert daemon.returncode == 0


def test_local_output_is_configurable(blockd: Runner, db: Path, network: dict[str, str],
                                      tmp_path: Path) -> None:
    """With nft.local_output the appliance's own connections are blocked too."""
    assert blockd("init").code == 0
    add_order(blockd, "DE-1", "93.184.216.34", "--policy", "de")
    knock = ("import socket\ntry:\n    socket.create_connection(('93.184.216.34', 8000), "
             "timeout=1).close(); print('connected')\nexcept OSError as e:\n"
             "    print(type(e).__name__)\n")
    server = subprocess.Popen(
        ["ip", "netns", "exec", network["net"], sys.executable, "-c",
         "import socket\ns = socket.socket(); s.bind(('93.184.216.34', 8000)); s.listen()\n"
         "print('ready', flush=True)\nwhile True: s.accept()[0].close()"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        for local, expected in ((False, "connected"), (True, "ConnectionRefusedError")):
            config = tmp_path / f"local-{local}.toml"
            config.write_text(f"[nft]\nlocal_output = {'true' if local else 'false'}\n")
            env = {**os.environ, "BLOCKD_DB": str(db), "BLOCKD_CONFIG": str(config)}
            for args in (("nft", "flush"), ("nft", "apply")):
                subprocess.run(["ip", "netns", "exec", network["app"], sys.executable, "-m",
                                "blockd", *args], check=True, env=env, capture_output=True)
            got = in_ns(network["app"], sys.executable, "-c", knock).stdout.strip()
            assert got == expected, (local, got)
    finally:
        server.kill()
        server.communicate()


RECONCILE = textwrap.dedent("""
    import asyncio, json, sys
    from datetime import UTC, date, datetime
    from blockd.config import default_policies_dir
    from blockd.core.guard import load_guard
    from blockd.core.index import compile_index
    from blockd.core.model import OrderRecord
    from blockd.core.names import parse_target
    from blockd.nft.reconcile import Reconciler
    from blockd.nft.ruleset import Notice
    from blockd.store.shared import SharedStore

    NOW = datetime(2026, 1, 1, tzinfo=UTC)

    def index(*targets):
        order = OrderRecord("ES-9", "Juzgado", date(2025, 1, 1), NOW,
                            targets=frozenset(parse_target(t) for t in targets))
        return compile_index([order], NOW)

    async def main():
        r = Reconciler(SharedStore(sys.argv[1]), load_guard(default_policies_dir()), {},
                       Notice(None, None))
        await r.load()
        out = {"exists_before": r.exists}
        big = index(*[f"45.33.{2 * i}.0/24" for i in range(40)])  # no two merge
        out["first"] = sum(len(c.add) for c in await r.reconcile(big))
        out["again"] = await r.reconcile(big)  # nothing to do: no batch
        await r.hits(big)
        out["counters_big"] = len(r._packets)
        out["second"] = sum(len(c.remove) for c in await r.reconcile(index("45.33.2.0/24")))
        await r.hits(index("45.33.2.0/24"))
        out["counters_small"] = len(r._packets)
        out["stats"] = [r.stats.applies, r.stats.added, r.stats.removed]
        print(json.dumps(out))

    asyncio.run(main())
""")


def test_the_reconciler_applies_differences_and_keeps_bounded_state(
        blockd: Runner, db: Path, netns: str, tmp_path: Path) -> None:
    """desired -> diff -> apply, nothing applied when nothing changed, and the counter
    memory shrinks with the sets (it holds only what the kernel holds)."""
    assert blockd("init").code == 0
    script = tmp_path / "reconcile.py"
    script.write_text(RECONCILE)
    out = json.loads(in_ns(netns, sys.executable, str(script), str(db)).stdout)
    assert out == {"exists_before": False, "first": 40, "again": None, "counters_big": 40,
                   "second": 39, "counters_small": 1, "stats": [2, 40, 39]}
    assert oracle(netns)["sets"] == {"v4_reject": ["45.33.2.0/24"]}


def test_apply_shows_its_steps_on_a_terminal_only(netns: str, tmp_path: Path,
                                                  blockd: Runner, db: Path) -> None:
    from conftest import on_a_terminal

    assert blockd("init").code == 0
    assert blockd("order", "add", "IP-1", "--authority", "Court", "--issued", "2026-01-02",
                  "45.33.32.0/24", "2a01:4f8::/48").code == 0
    env = {**os.environ, "BLOCKD_DB": str(db)}
    env.pop("BLOCKD_CONFIG", None)
    seen = on_a_terminal(["ip", "netns", "exec", netns, sys.executable, "-m", "blockd", "nft",
                          "apply"], env)
    assert b"nft apply" in seen and b"applying" in seen and b"100%" in seen, seen
    assert "45.33.32.0/24" in str(oracle(netns))
    piped = blockd_ns(netns, db, "nft", "apply")
    assert "%" not in piped.stderr and "applied: 0 added, 0 removed" in piped.stdout
