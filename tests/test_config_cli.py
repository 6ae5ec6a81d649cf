"""`blockd config show` and `blockd config check` through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Runner


def test_show_says_where_each_value_came_from(blockd: Runner, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "blockd.toml"
    config.write_text('[dns]\nworkers = 3\nlisten = ["127.0.0.1:5353", "[::1]:5353"]\n'
                      '[store]\ncheck_interval = 30.0\n')
    monkeypatch.setenv("BLOCKD_CONFIG", str(config))
    r = blockd("config", "show", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    rows = {row["key"]: row for row in data["settings"]}
    assert data["file"] == str(config)
    assert rows["dns.workers"] == {"key": "dns.workers", "value": 3, "source": "file"}
    assert rows["dns.listen"]["value"] == ["127.0.0.1:5353", "[::1]:5353"]
    assert rows["store.check_interval"]["source"] == "file"
    assert rows["dns.rate_limit"] == {"key": "dns.rate_limit", "value": 5000.0,
                                      "source": "default"}
    assert rows["store.db"]["source"] == "environment"  # the fixture sets BLOCKD_DB
    r = blockd("config", "show", "--db", str(tmp_path / "other.db"))
    assert r.code == 0
    line = next(x for x in r.out.splitlines() if x.startswith("store.db "))
    assert "other.db" in line and line.endswith("# flag")
    assert "dns.workers" in r.out and r.out.startswith(f"# configuration file: {config}")


def test_show_without_a_file_is_the_defaults(blockd: Runner) -> None:
    r = blockd("config", "show", "--json")
    assert r.code == 0
    data = json.loads(r.out)
    assert data["file"] is None
    assert {row["source"] for row in data["settings"]} <= {"default", "environment"}


@pytest.mark.parametrize(("body", "problem", "line"), [
    ('[dns]\nlisten = ["127.0.0.1:53"]\n\nworkers = 0\n', "dns.workers: must be a positive "
     "integer, got 0", 4),
    ("[store]\ndb = \"x.db\"\n[notice]\nisp = 1\n", "notice.isp: unknown key", 4),
    ("[nosuch]\nx = 1\n", "nosuch: unknown section", 1),
    ("[policies]\ndir = \"/nonexistent/policies\"\n", "policies directory not found", None),
    ("[dns\n", "Expected ']'", None),
])
def test_check_names_the_key_and_line(blockd: Runner, tmp_path: Path, body: str,
                                      problem: str, line: int | None) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(body)
    r = blockd("config", "check", str(config))
    assert r.code == 2 and r.out == ""
    assert r.err.count("\n") == 1 and problem in r.err, r.err
    if line is not None:
        assert r.err.rstrip().endswith(f"(line {line})"), r.err


def test_check_a_good_file(blockd: Runner, tmp_path: Path) -> None:
    config = tmp_path / "good.toml"
    config.write_text('[dns]\nworkers = 2\n')
    r = blockd("config", "check", str(config), "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out) == {"file": str(config), "valid": True,
                                 "policies": ["de", "default", "dk", "it", "uk"]}
