"""The wheel, installed into a fresh venv outside the checkout, runs: the shipped policies,
protected lists and notice templates come with it, and an operator's policies directory
overrides them file by file."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    """A fresh venv in /tmp with the wheel installed (dependencies: this environment's,
    added as a plain path so that its editable blockd is not on it); returns its bin/."""
    with tempfile.TemporaryDirectory(prefix="blockd-wheel-") as name:
        yield from _install(Path(name))


@pytest.fixture
def outside() -> Iterator[Path]:
    """A working directory outside the checkout."""
    with tempfile.TemporaryDirectory(prefix="blockd-outside-") as name:
        yield Path(name)


def _install(tmp: Path) -> Iterator[Path]:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp / "dist"), str(ROOT)], check=True, timeout=300,
                   capture_output=True)
    [wheel] = (tmp / "dist").glob("blockd-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", str(wheel)], check=True, timeout=300, capture_output=True)
    purelib = subprocess.run([str(python), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "zz-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    yield venv / "bin"


def run(bin_dir: Path, cwd: Path, *args: str, config: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("BLOCKD_CONFIG", "BLOCKD_DB", "PYTHONPATH")}
    env["BLOCKD_ACTOR"] = "tester"
    if config is not None:
        env["BLOCKD_CONFIG"] = str(config)
    return subprocess.run([str(bin_dir / "blockd"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_installed_wheel_runs_outside_the_checkout(installed: Path, outside: Path
                                                       ) -> None:
    tmp_path = outside
    where = subprocess.run([str(installed / "python"), "-c",
                            "import blockd; print(blockd.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(installed.parent)) and not where.startswith(str(ROOT))
    assert run(installed, tmp_path, "init").returncode == 0
    assert (tmp_path / "var" / "blockd.db").exists()
    r = run(installed, tmp_path, "order", "add", "DK-1", "--authority", "Court", "--issued",
            "2024-01-01", "--policy", "dk", "allofmp3.com")
    assert r.returncode == 0, r.stderr
    r = run(installed, tmp_path, "check", "www.allofmp3.com")
    assert r.returncode == 0 and "BLOCKED" in r.stdout, r.stdout + r.stderr
    r = run(installed, tmp_path, "order", "add", "BAD-1", "--authority", "Court",
            "--issued", "2024-01-01", "google.com")  # the shipped protected list
    assert r.returncode == 2 and "protected" in r.stderr, r.stderr
    r = run(installed, tmp_path, "status")
    assert r.returncode == 0, r.stderr

    dns_proc = serve(installed, tmp_path, "dns")
    web_proc = serve(installed, tmp_path, "http")
    try:
        q = dns.message.make_query("www.allofmp3.com", "A")
        answer = dns.query.udp(q, "127.0.0.1", port=dns_proc.port, timeout=3)  # type: ignore[attr-defined]
        assert answer.answer, answer
        status, body = get(web_proc.port, "www.allofmp3.com")  # type: ignore[attr-defined]
        assert status == 451 and "DK-1" in body  # rendered from the shipped templates
    finally:
        for proc in (dns_proc, web_proc):
            proc.terminate()
            proc.communicate(timeout=20)


def test_an_operator_directory_overrides_file_by_file(installed: Path, outside: Path
                                                     ) -> None:
    """Only the files an operator puts in `[policies] dir` replace the shipped ones."""
    tmp_path = outside
    etc = tmp_path / "etc-policies"
    (etc / "notices").mkdir(parents=True)
    (etc / "protected-names.txt").write_text("example.org  # our own brand\n")
    (etc / "notices" / "default.en.html").write_text(
        "<!doctype html><title>Blocked</title><p>LOCAL NOTICE {{ orders[0].reference }}"
        "</p>\n")
    (etc / "notices" / "default.da.html").write_text(  # broken: the shipped one stands in
        "<!doctype html><p>{{ no_such_value.x }}</p>\n")
    config = tmp_path / "blockd.toml"
    config.write_text(f'[policies]\ndir = "{etc}"\n[notice]\nlisten = ["127.0.0.1:0"]\n')
    assert run(installed, tmp_path, "init", config=config).returncode == 0
    r = run(installed, tmp_path, "order", "add", "X-1", "--authority", "Court", "--issued",
            "2024-01-01", "example.org", config=config)
    assert r.returncode == 2 and "our own brand" in r.stderr, r.stderr
    r = run(installed, tmp_path, "order", "add", "X-2", "--authority", "Court", "--issued",
            "2024-01-01", "google.com", "allofmp3.com", config=config)
    assert r.returncode == 0, r.stderr  # the shipped protected list is overridden
    web = serve(installed, tmp_path, "http", config=config)
    try:
        status, body = get(web.port, "allofmp3.com", lang="en")  # type: ignore[attr-defined]
        assert status == 451 and "LOCAL NOTICE X-2" in body, body[:300]
        status, body = get(web.port, "www.allofmp3.com", lang="da")  # type: ignore[attr-defined]
        assert status == 451 and "X-2" in body and "<html" in body
    finally:
        web.terminate()
        web.communicate(timeout=20)


def serve(bin_dir: Path, cwd: Path, what: str, config: Path | None = None
          ) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("BLOCKD_CONFIG", "BLOCKD_DB", "PYTHONPATH")}
    if config is not None:
        env["BLOCKD_CONFIG"] = str(config)
    proc = subprocess.Popen([str(bin_dir / "blockd"), "serve", what, "--listen",
                             "127.0.0.1:0"], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on" in line, line
    where = line.split("listening on ", 1)[1].split()[0].rstrip(";/")
    proc.port = int(where.rsplit(":", 1)[1].split("/")[0])  # type: ignore[attr-defined]
    return proc


def get(port: int, host: str, lang: str = "da") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": host, "Accept-Language": lang})
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()
