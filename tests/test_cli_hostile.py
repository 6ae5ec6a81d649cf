"""Hostile CLI input (issue 14, first findings): a one-line error naming the field, exit 2,
and the store byte for byte as it was; never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Runner, db_digest

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
