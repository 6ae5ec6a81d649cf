"""Shared fixtures: a real SQLite file per test and an in-process runner for the real CLI."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from blockd.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str


Runner = Callable[..., Result]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "var" / "blockd.db"


@pytest.fixture
def blockd(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Runner:
    """Run `blockd ARGS...` in-process against the test's store; returns code/out/err."""
    monkeypatch.setenv("BLOCKD_DB", str(db))
    monkeypatch.setenv("BLOCKD_ACTOR", "tester")
    monkeypatch.delenv("BLOCKD_CONFIG", raising=False)

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def db_digest(path: Path) -> str:
    """A digest of every row of every table: equal digests mean an unchanged store."""
    con = sqlite3.connect(path)
    try:
        h = hashlib.sha256()
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        for t in tables:
            h.update(t.encode())
            for row in con.execute(f'SELECT * FROM "{t}" ORDER BY 1'):
                h.update(repr(row).encode())
        return h.hexdigest()
    finally:
        con.close()
