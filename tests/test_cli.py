"""The real `blockd` CLI against a real SQLite file: the AllofMP3 story and every refusal."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import Result, Runner, db_digest, db_execute, on_a_terminal, read_to_end

REF = "FI-15124/2006"
ADD = ["order", "add", REF, "--authority", "Copenhagen City Court", "--issued", "2006-10-25",
       "--received", "2006-10-26T09:00", "--policy", "dk", "--requested-by", "IFPI Danmark",
       "--legal-basis", "Danish Copyright Act", "--contact", "abuse@isp.example"]


def ok(r: Result) -> Result:
    assert r.code == 0, r.err
    return r


def error(r: Result, *fragments: str) -> str:
    assert r.code == 2, (r.out, r.err)
    line = r.err.strip()
    assert "\n" not in line and line.startswith("blockd: error: "), r.err
    assert "Traceback" not in r.err
    for f in fragments:
        assert f in line, line
    return line


@pytest.fixture
def store(blockd: Runner, store_db: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """An initialised store the runner uses: a SQLite file, then a PostgreSQL database."""
    monkeypatch.setenv("BLOCKD_DB", store_db)
    ok(blockd("init"))
    return store_db


def test_allofmp3_end_to_end(blockd: Runner, store: str) -> None:
    out = json.loads(ok(blockd(*ADD, "allofmp3.com", "--json")).out)
    assert out["targets"] == ["allofmp3.com"] and out["jurisdiction"] == "DK"
    assert out["deadline"] == "7 working days"
    # received Thursday 26 Oct 2006 09:00 Copenhagen: 7 working days -> Mon 6 Nov
    assert out["enforce_by"] == "2006-11-06T08:00:00Z"
    assert blockd("check", "www.allofmp3.com").code == 0
    assert blockd("check", "allofmp3.com.evil.example").code == 1
    # the service resurfaces on clone domains: the order gains targets
    ok(blockd("order", "target", "add", REF, "mp3sparks.com", "allofmp3.ru"))
    r = blockd("check", "music.mp3sparks.com", "--json")
    assert r.code == 0
    assert json.loads(r.out)["matches"][0]["reference"] == REF
    # suspended on appeal, resumed, lifted
    ok(blockd("order", "suspend", REF, "--reason", "appeal lodged"))
    assert blockd("check", "allofmp3.com").code == 1
    ok(blockd("order", "resume", REF, "--reason", "appeal dismissed"))
    assert blockd("check", "allofmp3.com").code == 0
    ok(blockd("order", "target", "remove", REF, "allofmp3.ru"))
    assert blockd("check", "allofmp3.ru").code == 1
    ok(blockd("order", "lift", REF, "--reason", "order discharged"))
    assert blockd("check", "allofmp3.com").code == 1
    error(blockd("order", "resume", REF, "--reason", "x"), "lifted")
    log = json.loads(ok(blockd("audit", "log", "--json")).out)
    assert [e["action"] for e in log] == ["order.add", "target.add", "order.status",
                                         "order.status", "target.remove", "order.status"]
    assert {e["actor"] for e in log} == {"tester"}
    assert ok(blockd("audit", "verify")).out.startswith("journal OK: 6 entries")
    show = json.loads(ok(blockd("order", "show", REF, "--json")).out)
    assert show["status"] == "lifted" and show["status_reason"] == "order discharged"
    assert len(show["history"]) == 6
    listed = json.loads(ok(blockd("order", "list", "--status", "lifted", "--json")).out)
    assert [o["reference"] for o in listed] == [REF]
    assert json.loads(ok(blockd("order", "list", "--in-force", "--json")).out) == []


def test_sunset_by_date_needs_no_command(blockd: Runner, store: str) -> None:
    ok(blockd(*ADD, "--until", "2030-06-30", "allofmp3.com"))
    # a bare date is read in the policy's zone (Copenhagen) and covers that whole day
    assert blockd("check", "allofmp3.com", "--at", "2030-06-30T23:59:00+02:00").code == 0
    assert blockd("check", "allofmp3.com", "--at", "2030-07-01T00:00:00+02:00").code == 1
    later = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    ok(blockd("order", "add", "LATER-1", "--authority", "Court", "--issued", "2026-01-01",
              "--effective-from", later, "later.example"))
    assert blockd("check", "later.example").code == 1
    assert blockd("check", "later.example", "--at", later + "T12:00:00Z").code == 0
    assert "not yet in force" not in ok(blockd("order", "show", "LATER-1")).out


def test_idn_and_ipv6(blockd: Runner, store: str) -> None:
    ok(blockd(*ADD, "bücher.example", "2a01:4f8:0:0::/48", "45.33.32.156"))
    show = json.loads(ok(blockd("order", "show", REF, "--json")).out)
    assert sorted(show["targets"]) == ["2a01:4f8::/48", "45.33.32.156", "xn--bcher-kva.example"]
    assert blockd("check", "www.BÜCHER.example").code == 0
    assert blockd("check", "www.xn--bcher-kva.example").code == 0
    assert blockd("check", "2a01:4f8::1234").code == 0
    assert blockd("check", "2a01:4f9::1").code == 1
    assert blockd("check", "45.33.32.156").code == 0
    assert blockd("check", "45.33.32.157").code == 1


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("com", "top-level domain"),
        ("co.uk", "public suffix"),
        ("*.co.uk", "public suffix"),
        ("blogspot.com", "public suffix"),
        ("google.com", "protected name"),
        ("drive.usercontent.google.com", "inside protected name google.com"),
        ("10.1.2.3", "private"),
        ("127.0.0.1", "loopback"),
        ("224.0.0.1", "multicast"),
        ("fe80::1", "link-local"),
        ("45.33.0.0/16", "broader than /24"),
        ("2a01:4f8::/32", "broader than /48"),
        ("8.8.8.8", "public resolver"),
        ("104.16.1.1", "Cloudflare"),
        ("2606:4700::1", "Cloudflare"),
        ("198.41.0.4", "root server"),
    ],
)
def test_overblocking_guard_refuses(blockd: Runner, store: str, target: str,
                                    reason: str) -> None:
    before = db_digest(store)
    error(blockd(*ADD, "allofmp3.com", target), "overblocking guard", reason)
    assert db_digest(store) == before


def test_force_is_journaled(blockd: Runner, store: str) -> None:
    ok(blockd(*ADD, "allofmp3.com"))
    error(blockd("order", "target", "add", REF, "blogspot.com", "--justification", "x"),
          "--justification", "only meaningful with --force")
    error(blockd("order", "target", "add", REF, "blogspot.com", "--force"), "--justification")
    ok(blockd("order", "target", "add", REF, "blogspot.com", "--force", "--justification",
              "order para 4 names the whole suffix"))
    entry = json.loads(ok(blockd("audit", "log", "--json")).out)[-1]
    assert entry["payload"]["forced"]["justification"] == "order para 4 names the whole suffix"
    assert "public suffix" in entry["payload"]["forced"]["refusals"][0]


BAD_INPUTS = [
    (["--issued", "2006-13-45"], "--issued"),
    (["--issued", "yesterday"], "--issued"),
    (["--issued", "2999-01-01"], "--issued"),
    (["--received", "2006-10-24"], "--received"),  # before the order was issued
    (["--received", "31/10/2006"], "--received"),
    (["--effective-from", "soon"], "--effective-from"),
    (["--until", "2006-02-30"], "--until"),
    (["--until", "2006-10-01"], "--until"),  # before enforcement starts
    (["--jurisdiction", "Denmark"], "--jurisdiction"),
    (["--policy", "nowhere"], "--policy"),
    (["--authority", "   "], "--authority"),
    (["--requested-by", "a\x00b"], "--requested-by"),
    (["--contact", "x" * 600], "--contact"),
    (["exa mple.com"], "target"),
    (["http://allofmp3.com/"], "target"),
    (["1.2.3.999"], "target"),
    (["2001:db8::/129"], "target"),
    (["a" * 64 + ".com"], "target"),
    (["w*w.example"], "target"),
]


@pytest.mark.parametrize(("extra", "field"), BAD_INPUTS)
def test_bad_input_names_the_field_and_changes_nothing(
    blockd: Runner, store: str, extra: list[str], field: str
) -> None:
    ok(blockd("order", "add", "EXISTING-1", "--authority", "Court", "--issued", "2020-01-01",
              "existing.example"))
    before = db_digest(store)
    args = [*ADD]
    for i in range(0, len(extra) - 1, 2):
        if extra[i].startswith("--") and extra[i] in args:
            args[args.index(extra[i]) + 1] = extra[i + 1]
            extra = extra[:i] + extra[i + 2:]
            break
    line = error(blockd(*args, *extra, "allofmp3.com"))
    assert field in line
    assert db_digest(store) == before


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["order", "add", "bad\nref", "--authority", "a", "--issued", "2020-01-01"], "reference"),
        (["order", "add", "EXISTING-1", "--authority", "a", "--issued", "2020-01-01"],
         "already exists"),
        (["order", "target", "add", "NOPE", "x.example"], "no order"),
        (["order", "target", "remove", "EXISTING-1", "other.example"], "not on order"),
        (["order", "suspend", "EXISTING-1", "--reason", ""], "--reason"),
        (["order", "lift", "NOPE", "--reason", "x"], "no order"),
        (["order", "list", "--at", "tomorrow-ish"], "--at"),
        (["order", "show", "EXISTING-1", "--limit", "-1"], "--limit"),
        (["check", "not a name"], "NAME_OR_IP"),
        (["check", "10.0.0.0/8"], "NAME_OR_IP"),
        (["audit", "log", "--since", "last week"], "--since"),
        (["import", "missing.txt", "--format", "list", "--order", "EXISTING-1"], "FILE"),
        (["order", "add"], "Missing argument"),
        (["order", "frobnicate"], "No such command"),
    ],
)
def test_other_errors_are_one_line(blockd: Runner, store: str, args: list[str],
                                   field: str) -> None:
    ok(blockd("order", "add", "EXISTING-1", "--authority", "Court", "--issued", "2020-01-01",
              "existing.example"))
    before = db_digest(store)
    error(blockd(*args), field)
    assert db_digest(store) == before


def test_missing_and_locked_database(blockd: Runner, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "b.db"
    error(blockd("status", "--db", str(missing)), "no database at", "blockd init")
    assert not missing.exists()
    ok(blockd("init", "--db", str(tmp_path / "l.db")))
    con = sqlite3.connect(tmp_path / "l.db", isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    try:
        r = subprocess.run(
            [sys.executable, "-m", "blockd", "order", "add", "L-1", "--authority", "a",
             "--issued", "2020-01-01", "--db", str(tmp_path / "l.db")],
            capture_output=True, text=True, timeout=30, env={**os.environ},
        )
    finally:
        con.execute("ROLLBACK")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("blockd: error: database")
    assert "locked" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "junk.db").write_bytes(b"not a database" * 512)
    r = blockd("status", "--db", str(tmp_path / "junk.db"))  # damaged: says how to recover
    assert r.code == 1 and "damaged" in r.out and "blockd store restore" in r.out, r


def test_tamper_detection(blockd: Runner, store: str) -> None:
    ok(blockd(*ADD, "allofmp3.com"))
    ok(blockd("order", "target", "add", REF, "mp3sparks.com"))
    ok(blockd("order", "suspend", REF, "--reason", "appeal"))
    ok(blockd("audit", "verify"))
    db_execute(store, "UPDATE journal SET payload = replace(payload, 'mp3sparks', "
               "'innocent') WHERE seq = 2")
    r = blockd("audit", "verify", "--json")
    assert r.code == 1
    problems = json.loads(r.out)["problems"]
    assert any(p.startswith("entry 2: content does not match its hash") for p in problems)
    # a direct edit of the order tables, with the journal intact, is caught too
    db_execute(store, "UPDATE journal SET payload = replace(payload, 'innocent', "
               "'mp3sparks') WHERE seq = 2", "UPDATE orders SET status = 'active'")
    r = blockd("audit", "verify")
    assert r.code == 1
    assert "status is 'active' in the table, 'suspended' in the journal" in r.out
    db_execute(store, "UPDATE orders SET status = 'suspended'",
               "DELETE FROM journal WHERE seq = 2")
    r = blockd("audit", "verify")
    assert r.code == 1 and "sequence gap" in r.out


def test_import_all_or_nothing(blockd: Runner, store: str, tmp_path: Path) -> None:
    ok(blockd(*ADD, "allofmp3.com"))
    good = tmp_path / "mirrors.txt"
    good.write_text("# clones\nmp3sparks.com\nallofmp3.com  # already there\n*.mp3clone.example\n"
                    "45.33.32.0/24\n")
    r = json.loads(ok(blockd("import", str(good), "--format", "list", "--order", REF,
                             "--json")).out)
    assert r == {"reference": REF, "added": 3, "already": 1}
    bad = tmp_path / "bad.csv"
    bad.write_text("target,note\nnew1.example,x\nnot a domain,y\n")
    before = db_digest(store)
    error(blockd("import", str(bad), "--format", "csv", "--order", REF), "line 3")
    guarded = tmp_path / "guarded.txt"
    guarded.write_text("new2.example\n8.8.8.8\n")
    error(blockd("import", str(guarded), "--format", "list", "--order", REF),
          "overblocking guard")
    assert db_digest(store) == before
    dry = tmp_path / "dry.txt"
    dry.write_text("new3.example\n")
    assert "nothing written" in ok(blockd("import", str(dry), "--format", "list",
                                          "--order", REF, "--dry-run")).out
    assert db_digest(store) == before


def test_export_rpz_loads_in_bind_and_unbound(blockd: Runner, store: str,
                                              tmp_path: Path) -> None:
    ok(blockd(*ADD, "allofmp3.com", "=exact.example", "*.wild.example", "bücher.example",
              "45.33.32.0/24", "45.33.33.7", "2a01:4f8::/48"))
    ok(blockd("order", "add", "IT-1", "--authority", "AGCOM", "--issued", "2024-02-01",
              "--policy", "it", "nx.example", "allofmp3.com"))
    zone = tmp_path / "blockd.rpz"
    ok(blockd("export", "--format", "rpz", "--output", str(zone)))
    text = zone.read_text()
    assert "32.7.33.45.45.rpz-ip" not in text and "32.7.33.33.45.rpz-ip" in text
    assert "48.zz.4f8.2a01.rpz-ip" in text
    assert "nx.example CNAME ." in text and "*.allofmp3.com A 127.0.0.1" in text
    checkzone = subprocess.run([shutil.which("named-checkzone") or "named-checkzone",
                                "rpz.blockd", str(zone)], capture_output=True, text=True)
    assert checkzone.returncode == 0, checkzone.stdout + checkzone.stderr
    conf = tmp_path / "unbound.conf"
    conf.write_text(
        f"server:\n  directory: \"{tmp_path}\"\n  chroot: \"\"\n  username: \"\"\n"
        f"  pidfile: \"{tmp_path}/u.pid\"\n  module-config: \"respip validator iterator\"\n"
        "  local-zone: \".\" static\n  interface: 127.0.0.1\n  port: 5399\n"
        f"rpz:\n  name: rpz.blockd\n  zonefile: \"{zone}\"\n")
    check = subprocess.run([shutil.which("unbound-checkconf") or "unbound-checkconf",
                            str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # and the checkers do fail on a broken zone, so the assertions above can fail
    zone.write_text(text + "broken.example A 300.1.2.3\n")
    assert subprocess.run(["named-checkzone", "rpz.blockd", str(zone)],
                          capture_output=True).returncode != 0
    # the exported list imports back into an order unchanged
    listing = tmp_path / "list.txt"
    ok(blockd("export", "--format", "list", "-o", str(listing)))
    ok(blockd("order", "add", "COPY-1", "--authority", "Court", "--issued", "2020-01-01"))
    ok(blockd("import", str(listing), "--format", "list", "--order", "COPY-1"))
    original = json.loads(ok(blockd("order", "show", REF, "--json")).out)["targets"]
    copied = json.loads(ok(blockd("order", "show", "COPY-1", "--json")).out)["targets"]
    assert set(original) <= set(copied)


def test_help_everywhere(blockd: Runner) -> None:
    commands = [[], ["init"], ["status"], ["order"], ["order", "add"], ["order", "list"],
                ["order", "show"], ["order", "target", "add"], ["order", "target", "remove"],
                ["order", "suspend"], ["order", "resume"], ["order", "lift"], ["check"],
                ["import"], ["export"], ["audit", "log"], ["audit", "verify"],
                ["serve", "dns"]]
    for cmd in commands:
        r = blockd(*cmd, "--help")
        assert r.code == 0 and "Usage: blockd" in r.out, cmd
        if cmd and cmd[-1] not in ("order", "target"):
            assert "--db" in r.out, cmd


def test_status_json(blockd: Runner, store: str) -> None:
    ok(blockd(*ADD, "allofmp3.com", "mp3sparks.com"))
    s = json.loads(ok(blockd("status", "--json")).out)
    assert s["orders"]["active"] == 1 and s["in_force"] == 1 and s["targets_in_force"] == 2
    assert s["journal"]["head_seq"] == 1 and len(s["journal"]["head_hash"]) == 64
    assert s["policies"] == ["de", "default", "dk", "it", "uk"]


def test_console_script_runs(tmp_path: Path) -> None:
    """The installed `blockd` entry point, as an engineer runs it."""
    exe = Path(sys.executable).with_name("blockd")
    env = {**os.environ, "BLOCKD_DB": str(tmp_path / "c.db")}
    env.pop("BLOCKD_CONFIG", None)
    assert subprocess.run([str(exe), "init"], env=env, capture_output=True).returncode == 0
    r = subprocess.run([str(exe), "check", "allofmp3.com"], env=env, capture_output=True,
                       text=True)
    assert r.returncode == 1 and "not blocked" in r.stdout


def test_help_lists_every_command_without_loading_them() -> None:
    """`blockd --help` imports no command module, no store and no configuration models;
    the short help it prints is each command's own first line."""
    import importlib
    import subprocess
    import sys

    from blockd.cli.root import LAZY, cli

    probe = ("import sys; from blockd.cli import main; "
             "sys.argv = ['blockd', '--help']; code = main(['--help']); "
             "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
             "('sqlalchemy', 'sqlmodel', 'pydantic', 'aiohttp', 'dnslib') "
             "or m.startswith('blockd.cli.') and m not in "
             "('blockd.cli.root', 'blockd.cli.app')); print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    assert out.rstrip().endswith("HEAVY []"), out
    for name in LAZY:
        assert f"  {name} " in out
    for name, (module, short) in LAZY.items():
        importlib.import_module(module)
        command = cli.commands[name]
        assert " ".join((command.help or "").split("\n\n")[0].split()) == short, name


def test_check_many_subjects_one_line_each(blockd: Runner, db: Path) -> None:
    import subprocess
    import sys

    assert blockd("init").code == 0
    assert blockd("order", "add", "FI-15124/2006", "--authority", "Court", "--issued",
                  "2006-10-25", "allofmp3.com", "45.33.32.0/24").code == 0
    r = blockd("check", "www.allofmp3.com", "example.org", "45.33.32.9")
    assert r.code == 0
    assert r.out.splitlines() == [
        "www.allofmp3.com: BLOCKED (notice) by FI-15124/2006 via allofmp3.com",
        "example.org: not blocked",
        "45.33.32.9: BLOCKED (notice) by FI-15124/2006 via 45.33.32.0/24"]
    assert blockd("check", "example.org", "example.net").code == 1
    names = "allofmp3.com\n# a comment\n\nexample.org\nnot a name!\nм.allofmp3.com\n"
    env = {"BLOCKD_DB": str(db), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "blockd", "check", "-", "--json"],
                          input=names, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 2  # one line was not a name; the others are answered
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["subject"], r.get("blocked"), "error" in r) for r in rows] == [
        ("allofmp3.com", True, False), ("example.org", False, False),
        ("not a name!", None, True), ("xn--l1a.allofmp3.com", True, False)]


def test_import_shows_progress_on_a_terminal_only_and_ctrl_c_keeps_nothing(
        tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import db_digest

    db = tmp_path / "blockd.db"
    env = {**os.environ, "BLOCKD_DB": str(db), "BLOCKD_ACTOR": "tester"}
    env.pop("BLOCKD_CONFIG", None)
    blockd = [sys.executable, "-m", "blockd"]
    subprocess.run([*blockd, "init"], env=env, check=True, capture_output=True)
    subprocess.run([*blockd, "order", "add", "BIG-1", "--authority", "Court", "--issued",
                    "2026-01-02"], env=env, check=True, capture_output=True)
    names = tmp_path / "names.txt"
    names.write_text("".join(f"site{i}.example\n" for i in range(20_000)))
    piped = subprocess.run([*blockd, "import", str(names), "--format", "list", "--order",
                            "BIG-1"], env=env, capture_output=True, text=True, check=True)
    assert piped.stderr == ""  # no bar when stderr is not a terminal
    more = tmp_path / "more.txt"
    more.write_text("".join(f"more{i}.example\n" for i in range(20_000)))
    seen = on_a_terminal([*blockd, "import", str(more), "--format", "list", "--order",
                          "BIG-1"], env)
    assert b"reading" in seen and b"writing" in seen and b"100%" in seen

    big = tmp_path / "big.txt"
    big.write_text("".join(f"big{i}.example\n" for i in range(400_000)))
    before = db_digest(db)
    proc = subprocess.Popen([*blockd, "import", str(big), "--format", "list", "--order",
                             "BIG-1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert db_digest(db) == before  # one transaction: nothing of the import remains


@pytest.mark.parametrize("args", [["check", "www.allofmp3.com"], ["check", "-"], ["status"],
                                  ["order", "show", "DK-1"],
                                  ["order", "target", "add", "DK-1", "mirror.example"]])
def test_quick_commands_load_no_orm_and_no_schema(tmp_path: Path, args: list[str]) -> None:
    """What engineers type most runs on the standard library's sqlite3 and the validated
    files remembered from the run before: no SQLAlchemy, sqlmodel or pydantic import
    (0.65 s of the 0.3 s such a command may take). The first run validates."""
    env = {**os.environ, "BLOCKD_DB": str(tmp_path / "q.db"), "BLOCKD_ACTOR": "t",
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("BLOCKD_CONFIG", None)
    config = tmp_path / "blockd.toml"
    config.write_text('[notice]\nisp_name = "Example ISP"\n')
    env["BLOCKD_CONFIG"] = str(config)
    exe = str(Path(sys.executable).with_name("blockd"))
    for setup in (["init"], ["order", "add", "DK-1", "--authority", "Court", "--issued",
                             "2006-10-25", "--policy", "dk", "allofmp3.com"]):
        subprocess.run([exe, *setup], env=env, check=True, capture_output=True)
    probe = ("import sys; from blockd.cli import main; code = main(sys.argv[1:]); "
             "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
             "('sqlalchemy', 'sqlmodel', 'pydantic', 'aiohttp', 'dnslib')); "
             "print('HEAVY', code, heavy)")
    r = subprocess.run([sys.executable, "-c", probe, *args], env=env, capture_output=True,
                       text=True, input="allofmp3.com\nexample.org\n")
    assert r.stdout.rstrip().splitlines()[-1] == "HEAVY 0 []", (r.stdout, r.stderr)
    before = subprocess.run([exe, "audit", "verify"], env=env, capture_output=True, text=True)
    assert before.returncode == 0, before.stdout + before.stderr


def test_an_edited_configuration_is_validated_again(tmp_path: Path) -> None:
    """The memo of a validated file is keyed by its content: an edit that breaks it is
    reported the next time, never answered from the memo; a bad file is never kept."""
    env = {**os.environ, "BLOCKD_DB": str(tmp_path / "q.db"),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    config = tmp_path / "blockd.toml"
    env["BLOCKD_CONFIG"] = str(config)
    exe = str(Path(sys.executable).with_name("blockd"))
    config.write_text('[dns]\nworkers = 2\n')
    assert subprocess.run([exe, "init"], env=env, capture_output=True).returncode == 0
    assert subprocess.run([exe, "check", "a.example"], env=env,
                          capture_output=True).returncode == 1
    kept = sorted((tmp_path / "cache" / "blockd").iterdir())
    assert kept and all(p.stat().st_mode & 0o777 == 0o600 for p in kept)
    config.write_text('[dns]\nworkers = "2"\n')  # same size class, new content
    for _ in range(2):
        r = subprocess.run([exe, "check", "a.example"], env=env, capture_output=True,
                           text=True)
        assert r.returncode == 2 and "dns.workers: must be a positive integer" in r.stderr
    assert sorted((tmp_path / "cache" / "blockd").iterdir()) == kept
    config.write_text('[dns]\nworkers = 2\n')
    r = subprocess.run([exe, "check", "a.example"], env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "not blocked" in r.stdout


def test_a_memo_others_could_write_is_not_read(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Memos are pickles: one in a directory or file that others may write is ignored
    (validated again), and a damaged one is validated again too."""
    from blockd import configmemo
    from blockd.config import load_config

    config = tmp_path / "blockd.toml"
    config.write_text('[notice]\nisp_name = "Example ISP"\n')
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    first = load_config(config)
    (memo,) = (cache / "blockd").iterdir()
    fake = dataclasses.replace(first, isp_name="Someone Else")
    import pickle

    memo.write_bytes(pickle.dumps(fake))
    assert load_config(config).isp_name == "Someone Else"  # the memo is what was read
    memo.chmod(0o666)
    assert load_config(config).isp_name == "Example ISP"
    memo.chmod(0o600)
    (cache / "blockd").chmod(0o777)
    assert load_config(config).isp_name == "Example ISP"
    (cache / "blockd").chmod(0o700)
    memo.write_bytes(b"\x80\x05garbage")
    assert load_config(config) == first
    assert configmemo.cache_dir() == cache / "blockd"


def _imported_store(tmp_path: Path, names: int) -> tuple[dict[str, str], list[str]]:
    """(environment, command) for the real CLI on a fresh store whose order BIG-1 holds
    ``names`` imported names."""
    env = {**os.environ, "BLOCKD_DB": str(tmp_path / "p.db"), "BLOCKD_ACTOR": "tester"}
    env.pop("BLOCKD_CONFIG", None)
    blockd = [sys.executable, "-m", "blockd"]
    listed = tmp_path / "names.txt"
    listed.write_text("".join(f"site{i}.example\n" for i in range(names)))
    for args in (["init"], ["order", "add", "BIG-1", "--authority", "Court", "--issued",
                            "2026-01-02"],
                 ["import", str(listed), "--format", "list", "--order", "BIG-1"]):
        subprocess.run([*blockd, *args], env=env, check=True, capture_output=True)
    return env, blockd


def test_export_and_report_show_progress_on_a_terminal_only(tmp_path: Path) -> None:
    env, blockd = _imported_store(tmp_path, 5_000)
    out = tmp_path / "out.rpz"
    for args, words in ((["export", "--format", "rpz", "-o", str(out)],
                         [b"reading orders", b"100%"]),
                        (["report", "BIG-1", "-o", str(tmp_path / "r.html")],
                         [b"report", b"hits", b"done", b"100%"])):
        piped = subprocess.run([*blockd, *args], env=env, capture_output=True, text=True)
        assert piped.returncode == 0 and "%" not in piped.stderr  # no bar off a terminal
        seen = on_a_terminal([*blockd, *args], env)
        assert all(w in seen for w in words), seen
    assert out.read_text().count(" A 127.0.0.1\n") == 10_000  # each name and its *.


def test_ctrl_c_during_an_export_leaves_no_file(tmp_path: Path) -> None:
    """Interrupted while reading 100k targets: exit 130, no output and no half-written
    temporary file beside it."""
    import pty
    import signal

    env, blockd = _imported_store(tmp_path, 100_000)
    out = tmp_path / "zone.rpz"
    master, slave = pty.openpty()
    proc = subprocess.Popen([*blockd, "export", "--format", "rpz", "-o", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    seen = b""
    while b"reading orders" not in seen:
        chunk = os.read(master, 4096)
        assert chunk, seen
        seen += chunk
    proc.send_signal(signal.SIGINT)
    seen = read_to_end(master, seen)
    assert proc.wait(timeout=60) == 130, seen
    os.close(master)
    assert b"interrupted" in seen
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("zone")) == []
