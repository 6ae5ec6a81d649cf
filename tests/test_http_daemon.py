"""The real `blockd serve http` on loopback with a real store: status, headers, languages,
escaping, lifted orders, transparency, limits and hits. Clients are plain sockets/urllib."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from blockd.cli import main

HOSTILE = 'High Court <script>alert("x")</script> {{ 7*7 }}'


@dataclass
class Http:
    port: int
    db: Path
    proc: subprocess.Popen[str]

    def get(self, host: str | None, path: str = "/", method: str = "GET",
            headers: dict[str, str] | None = None, body: bytes | None = None
            ) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            if host is not None:
                conn.putheader("Host", host)
            for k, v in (headers or {}).items():
                conn.putheader(k, v)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
        finally:
            conn.close()


def cli(db: Path, *args: str) -> None:
    assert main([*args, "--db", str(db)]) == 0


@pytest.fixture(scope="module")
def notice(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Http]:
    tmp = tmp_path_factory.mktemp("http")
    db = tmp / "blockd.db"
    config = tmp / "blockd.toml"
    config.write_text('[notice]\nurl = "https://isp.example/blocking"\n'
                      'isp_name = "Example ISP"\nisp_contact = "support@isp.example"\n'
                      '[hits]\nflush_interval = 0.2\n')
    os.environ["BLOCKD_CONFIG"] = str(config)
    try:
        cli(db, "init")
        cli(db, "order", "add", "FI-15124/2006", "--authority", "Copenhagen City Court",
            "--issued", "2006-10-25", "--policy", "dk", "--requested-by", "IFPI Danmark",
            "--legal-basis", "Danish Copyright Act", "allofmp3.com")
        cli(db, "order", "add", "UK-2014-1", "--authority", HOSTILE, "--issued", "2014-10-17",
            "--policy", "uk", "--appeal", "Apply <a href='x'>here</a>", "--requested-by",
            "Cartier", "counterfeit.example")
        cli(db, "order", "add", "DE-1", "--authority", "LG München I", "--issued",
            "2025-07-01", "--policy", "de", "gesperrt.example")
        cli(db, "order", "add", "IT-1", "--authority", "AGCOM", "--issued", "2024-02-01",
            "--policy", "it", "bloccato.example")
        cli(db, "order", "add", "TEMP-1", "--authority", "Court", "--issued", "2024-01-01",
            "soon-lifted.example")
    finally:
        del os.environ["BLOCKD_CONFIG"]
    env = {**os.environ, "BLOCKD_CONFIG": str(config)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "blockd", "serve", "http", "--db", str(db),
         "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on http://127.0.0.1:" in line, line + (proc.stderr.read() if
                                                              proc.stderr else "")
    port = int(line.split("http://127.0.0.1:", 1)[1].split("/", 1)[0])
    yield Http(port, db, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


def test_451_with_headers(notice: Http) -> None:
    status, headers, body = notice.get("www.allofmp3.com:80", "/any/path?x=1")
    assert status == 451
    assert headers["link"] == '<https://isp.example/blocking>; rel="blocked-by"'
    assert headers["cache-control"] == "no-store"
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["content-language"] == "da"  # the Danish policy's first language
    for text in ("Copenhagen City Court", "FI-15124/2006", "2006-10-25", "IFPI Danmark",
                 "Danish Copyright Act", "support@isp.example", "www.allofmp3.com"):
        assert text in body


@pytest.mark.parametrize(("host", "accept", "query", "lang", "phrase"), [
    ("allofmp3.com", "en-GB,en;q=0.9", "", "en", "blocked by court order"),
    ("allofmp3.com", "en;q=0.2, da;q=0.9", "", "da", "blokeret"),
    ("allofmp3.com", "fr", "", "da", "blokeret"),
    ("allofmp3.com", "da", "?lang=en", "en", "right to apply"),
    ("gesperrt.example", "de-DE", "", "de", "gesperrt"),
    ("bloccato.example", "it", "", "it", "bloccato"),
    ("counterfeit.example", "da", "?lang=da", "en", "vary or discharge"),
])
def test_languages(notice: Http, host: str, accept: str, query: str, lang: str,
                   phrase: str) -> None:
    status, headers, body = notice.get(host, "/" + query, headers={"Accept-Language": accept})
    assert status == 451
    assert headers["content-language"] == lang
    assert f'<html lang="{lang}">' in body
    assert phrase in body.lower() or phrase in body


def test_any_method_and_head(notice: Http) -> None:
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        status, _, body = notice.get("allofmp3.com", "/login", method, body=b"user=x")
        assert status == 451 and "FI-15124/2006" in body
    status, headers, body = notice.get("allofmp3.com", "/", "HEAD")
    assert status == 451 and body == "" and int(headers["content-length"]) > 1000


def test_hostile_order_text_is_escaped(notice: Http) -> None:
    _, _, body = notice.get("counterfeit.example")
    assert "<script>" not in body and "&lt;script&gt;" in body
    assert "{{ 7*7 }}" in body and "49" not in body
    assert "<a href" not in body and "&lt;a href=&#39;x&#39;&gt;here&lt;/a&gt;" in body


def test_unknown_and_bad_hosts(notice: Http) -> None:
    status, headers, body = notice.get("example.org")
    assert status == 404 and "Nothing is blocked here" in body
    assert "link" not in headers
    assert notice.get("bad host!")[0] == 400
    assert notice.get(None)[0] == 400  # no Host, and the connection was not redirected


def test_lifted_order_gets_503_with_retry_after(notice: Http) -> None:
    assert notice.get("soon-lifted.example")[0] == 451
    cli(notice.db, "order", "lift", "TEMP-1", "--reason", "discharged")
    deadline = time.monotonic() + 2
    while True:
        status, headers, body = notice.get("www.soon-lifted.example")
        if status == 503:
            break
        assert status == 451 and time.monotonic() < deadline
        time.sleep(0.05)
    assert headers["retry-after"] == "30"
    assert "no longer blocked" in body


def test_transparency(notice: Http) -> None:
    status, headers, body = notice.get("anything", "/.well-known/blockd/orders.json")
    assert status == 200 and headers["content-type"].startswith("application/json")
    data = json.loads(body)
    refs = {o["reference"]: o for o in data["orders"]}
    assert refs["FI-15124/2006"]["targets"] == ["allofmp3.com"]
    assert refs["UK-2014-1"]["authority"] == HOSTILE
    status, _, html = notice.get("anything", "/.well-known/blockd/orders")
    assert status == 200 and "FI-15124/2006" in html and "&lt;script&gt;" in html


def test_healthz(notice: Http) -> None:
    assert notice.get("x", "/healthz")[:1] == (200,)


def test_limits(notice: Http) -> None:
    assert notice.get("allofmp3.com", headers={"X-Big": "a" * 10_000})[0] in (400, 431)
    many = {f"X-H{i}": "v" for i in range(80)}
    assert notice.get("allofmp3.com", headers=many)[0] in (400, 431)
    with socket.create_connection(("127.0.0.1", notice.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: allofmp3.com\r\n")  # ...and never finishes
        start = time.monotonic()
        assert s.recv(1024) == b""  # closed by the server
        assert time.monotonic() - start < 8
    assert notice.get("allofmp3.com")[0] == 451  # and still serving


def test_hits_are_counted(notice: Http) -> None:
    notice.get("hits.allofmp3.com")
    from blockd.store.store import Store

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        counts = {t: n for _, _, t, n in Store.open(str(notice.db)).hits("FI-15124/2006")}
        if counts.get("allofmp3.com", 0) > 0:
            return
        time.sleep(0.1)
    raise AssertionError("no hits recorded for notices served")
