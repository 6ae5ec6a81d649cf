"""Hostile CLI input (issue 14, first findings): a one-line error naming the field, exit 2,
and the store byte for byte as it was; never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Runner, db_digest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

LONG = "a" * 10_000
HUGE = "99999999999999999999"


@pytest.fixture
def ready(blockd: Runner, db: Path) -> str:
    assert blockd("init").code == 0
    r = blockd("order", "add", "X-1", "--authority", "Court", "--issued", "2020-01-01",
               "a.example")
    assert r.code == 0, r.err
    return db_digest(db)


CASES = [
    (("order", "add", "X-2", "--authority", "Court\udcff\udcfe", "--issued", "2020-01-01",
      "b.example"), "--authority: is not valid UTF-8 text"),
    (("order", "add", "X-2", "--authority=Court\udcff", "--issued", "2020-01-01",
      "b.example"), "--authority: is not valid UTF-8 text"),
    (("order", "lift", "X-1", "--reason", "appeal\udc80"), "--reason: is not valid UTF-8 text"),
    (("order", "target", "add", "X-1", "c\udcff.example"), "argument 5: is not valid UTF-8"),
    (("export", "--format", "list", "--output", ""), "--output: must name a file"),
    (("audit", "log", "--limit", HUGE), "--limit"),
    (("audit", "log", "--since", HUGE), "--since: sequence number above"),
    (("status", "--db", LONG), "cannot use database"),
    (("import", "/dev/zero", "--format", "list", "--order", "X-1"),
     "FILE: /dev/zero is not a regular file"),
    # empty values are mistakes, not "none"
    (("status", "--db", ""), "--db: must not be empty"),
    (("order", "add", "X-2", "--authority", "Court", "--issued", "2020-01-01", "--until", "",
      "b.example"), "--until: '' is not a date"),
    (("order", "add", "X-2", "--authority", "Court", "--issued", "2020-01-01",
      "--requested-by", " ", "b.example"), "--requested-by: must not be empty"),
    (("order", "add", "X-2", "--authority", "", "--issued", "2020-01-01", "b.example"),
     "--authority: must not be empty"),
    # a newline in a one-line field would forge lines in `audit log`
    (("order", "lift", "X-1", "--reason", "ok\n2026-01-01 forged"), "--reason: must be one line"),
    (("order", "add", "X-2", "--authority", "Court\nof forgery", "--issued", "2020-01-01",
      "b.example"), "--authority: must be one line"),
    (("order", "add", "X-2", "--authority", "Court\x1b[31m", "--issued", "2020-01-01",
      "b.example"), "--authority: contains control characters"),
    # references
    (("order", "add", "--authority", "C", "--issued", "2020-01-01", "--", "-X", "b.example"),
     "reference: '-X' must start with a letter or a digit"),
    (("order", "add", "A/../B", "--authority", "C", "--issued", "2020-01-01", "b.example"),
     "reference: 'A/../B' holds a '.' or '..' path segment"),
    (("order", "add", "Ｘ-1", "--authority", "C", "--issued", "2020-01-01", "b.example"),
     "reference: order X-1 already exists"),  # fullwidth: NFKC makes it X-1
    (("order", "add", "Х-1", "--authority", "C", "--issued", "2020-01-01", "b.example"),
     "reference: 'Х-1' looks like existing order 'X-1'"),  # Cyrillic Х
    (("order", "add", "x-1", "--authority", "C", "--issued", "2020-01-01", "b.example"),
     "reference: 'x-1' looks like existing order 'X-1'"),
]


@pytest.mark.parametrize(("args", "expected"), CASES)
def test_hostile_input_is_one_line_exit_2_store_unchanged(
        blockd: Runner, db: Path, ready: str, args: tuple[str, ...], expected: str) -> None:
    r = blockd(*args)
    assert r.code == 2, (r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("blockd: error: "), r.err
    assert expected in lines[0]
    assert "Traceback" not in r.err
    assert db_digest(db) == ready


def test_invalid_utf8_bytes_from_a_real_shell(db: Path, ready: str) -> None:
    """The real process: argv bytes that are not UTF-8, and a BLOCKD_ variable."""
    env = {**os.environb, b"BLOCKD_DB": os.fsencode(db)}
    env.pop(b"BLOCKD_CONFIG", None)
    r = subprocess.run([os.fsencode(sys.executable), b"-m", b"blockd", b"order", b"lift",
                        b"X-1", b"--reason", b"r\xff\xfe"], env=env, capture_output=True)
    assert r.returncode == 2
    assert r.stderr.decode() == "blockd: error: --reason: is not valid UTF-8 text\n"
    env[b"BLOCKD_ACTOR"] = b"eve\xff"
    r = subprocess.run([os.fsencode(sys.executable), b"-m", b"blockd", b"order", b"lift",
                        b"X-1", b"--reason", b"ok"], env=env, capture_output=True)
    assert r.returncode == 2
    assert r.stderr.decode() == "blockd: error: BLOCKD_ACTOR: is not valid UTF-8 text\n"
    assert db_digest(db) == ready


def test_import_from_standard_input_still_works(blockd: Runner, db: Path, ready: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"d.example\n")))
    r = blockd("import", "-", "--format", "list", "--order", "X-1")
    assert r.code == 0, r.err
    assert db_digest(db) != ready


def test_a_look_alike_reference_needs_force_and_is_journaled(blockd: Runner, ready: str
                                                             ) -> None:
    r = blockd("order", "add", "Х-1", "--authority", "C", "--issued", "2020-01-01",
               "b.example", "--force", "--justification", "a different court's own number")
    assert r.code == 0, r.err
    assert "warning: 'Х-1' looks like existing order 'X-1'" in r.err
    log = blockd("audit", "log", "--json")
    assert "a different court's own number" in log.out


def test_audit_log_escapes_control_characters_already_stored(blockd: Runner, db: Path,
                                                             ready: str) -> None:
    """Text written before these checks (or by another tool) cannot forge output lines."""
    from datetime import UTC, datetime

    from blockd.core.model import Status
    from blockd.store.store import Store

    store = Store.open(str(db))
    store.set_status("X-1", Status.LIFTED, "ok\n     9  2030-01-01  forged", actor="t",
                     at=datetime.now(UTC))
    store.close()
    r = blockd("audit", "log")
    assert r.code == 0
    assert len(r.out.strip().splitlines()) == 2  # two entries, two lines
    assert "ok\\x0a" in r.out


@pytest.fixture
def db(store_db: str) -> str:
    """This module's store: a SQLite file, then a PostgreSQL database (conftest's runner
    and db_digest take either)."""
    return store_db


FREE_TEXT = ["--authority", "--requested-by", "--legal-basis", "--notice", "--contact",
             "--appeal", "--actor", "--justification", "reference", "--reason"]
ANY_TEXT = st.text(st.characters(blacklist_categories=()), max_size=40)  # surrogates too


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(option=st.sampled_from(FREE_TEXT), text=ANY_TEXT)
def test_any_text_in_any_free_text_option(blockd: Runner, db: Path, ready: str,
                                          option: str, text: str) -> None:
    """One-line error or success, never a traceback; the store changes only on success."""
    before = db_digest(db)
    if option == "--reason":
        args: list[str] = ["order", "suspend", "X-1", "--reason", text]
    else:
        ref = text if option == "reference" else f"H-{abs(hash(text))}"
        args = ["order", "add", ref, "--authority", "Court", "--issued", "2020-01-01",
                "h.example"]
        if option == "--justification":
            args += ["--force", "--justification", text]
        elif option != "reference":
            args += [option, text]
    r = blockd(*args)
    assert r.code in (0, 2), r
    if r.code == 2:
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("blockd: error: "), r.err
        assert db_digest(db) == before
    else:
        assert db_digest(db) != before
        if option == "--reason":  # back to active for the next example
            assert blockd("order", "resume", "X-1", "--reason", "test").code == 0


def test_a_high_impact_target_is_accepted_with_a_journaled_warning(blockd: Runner,
                                                                  ready: str) -> None:
    r = blockd("order", "add", "TR-1", "--authority", "Court", "--issued", "2020-01-01",
               "twitter.com", "pirate.example")
    assert r.code == 0, r.err
    assert r.err.strip() == ("blockd: warning: twitter.com: high impact: X (Twitter): "
                             "hundreds of millions of users, public authorities")
    r = blockd("order", "target", "add", "TR-1", "web.whatsapp.com")
    assert r.code == 0 and "web.whatsapp.com: high impact: WhatsApp" in r.err
    import json

    entries = json.loads(blockd("audit", "log", "--json").out)
    by_action = [(e["action"], e["payload"].get("collateral")) for e in entries[-2:]]
    assert by_action == [
        ("order.add", ["twitter.com: high impact: X (Twitter): hundreds of millions of "
                       "users, public authorities"]),
        ("target.add", ["web.whatsapp.com: high impact: WhatsApp: private messaging and "
                        "calls of most subscribers"])]
    assert blockd("audit", "verify").code == 0


def test_check_resolve_names_the_cname_behind_a_block(
        blockd: Runner, db: Path, ready: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`check` looks at the name; `check --resolve` also follows its CNAME chain at the
    configured upstream, as the resolver does."""
    from dnsstub import StubUpstream

    assert blockd("order", "add", "C-1", "--authority", "Court", "--issued", "2020-01-01",
                  "clone.example").code == 0
    with StubUpstream(["alias.example. 300 IN CNAME cdn.clone.example.",
                       "cdn.clone.example. 300 IN A 192.0.2.3",
                       "plain.example. 300 IN A 192.0.2.4"]) as up:
        config = tmp_path / "blockd.toml"
        config.write_text(f'[dns]\nupstream = ["127.0.0.1:{up.port}"]\n')
        monkeypatch.setenv("BLOCKD_CONFIG", str(config))
        r = blockd("check", "alias.example")
        assert r.code == 1 and r.out.strip() == "alias.example: not blocked"
        r = blockd("check", "--resolve", "alias.example")
        assert r.code == 0, r.err
        assert r.out.splitlines()[0] == (
            "alias.example: BLOCKED (notice) through a CNAME to cdn.clone.example")
        assert "order C-1 of Court via clone.example" in r.out
        import json

        data = json.loads(blockd("check", "--resolve", "--json", "alias.example").out)
        assert data["through_cname"] == "cdn.clone.example"
        assert blockd("check", "--resolve", "plain.example").code == 1
        config.write_text('[dns]\nupstream = ["127.0.0.1:9"]\nupstream_timeout = 0.2\n')
        r = blockd("check", "--resolve", "plain.example")
        assert r.code == 2
        assert r.err.strip() == ("blockd: error: --resolve: no upstream resolver answered "
                                 "(127.0.0.1:9)")


def test_import_refuses_a_file_over_the_size_limit(blockd: Runner, db: Path, ready: str,
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import blockd.cli.common as common

    monkeypatch.setattr(common, "MAX_IMPORT", 64)  # the real limit is 512 MiB
    big = tmp_path / "big.txt"
    big.write_text("".join(f"n{i}.example\n" for i in range(20)))
    r = blockd("import", str(big), "--format", "list", "--order", "X-1")
    assert r.code == 2 and r.err.strip() == f"blockd: error: FILE: {big} is larger than 0 MiB"
    assert db_digest(db) == ready
