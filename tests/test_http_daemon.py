"""The real `blockd serve http` on loopback with a real store: status, headers, languages,
escaping, lifted orders, transparency, limits and hits. Clients are plain sockets/urllib."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HOSTILE, Http, cli


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
        if time.monotonic() >= deadline:
            raise AssertionError(f"still {status}; /healthz: {notice.get('x', '/healthz')}")
        assert status == 451
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
    status, _, body = notice.get("x", "/healthz")
    assert status == 200 and body.startswith("ok\njournal seq ")


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


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """Read ``count`` HTTP/1.1 responses with Content-Length bodies from one connection."""
    data = b""
    out = []
    while len(out) < count:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, "connection closed early"
            data += chunk
        head, data = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(data) < length:
            data += sock.recv(65536)
        out.append((int(lines[0].split()[1]), headers, data[:length]))
        data = data[length:]
    return out


def test_keep_alive_pipelining_and_hand_over(notice: Http) -> None:
    """Fast path and full handler on one connection: GET, GET, then a POST with a body."""
    with socket.create_connection(("127.0.0.1", notice.port), timeout=5) as s:
        get = b"GET /a HTTP/1.1\r\nHost: allofmp3.com\r\nAccept-Language: it\r\n\r\n"
        post = (b"POST /login HTTP/1.1\r\nHost: www.allofmp3.com\r\nContent-Length: 6\r\n"
                b"\r\nuser=x")
        s.sendall(get + get.replace(b"/a", b"/b?lang=en") + post)
        responses = read_responses(s, 3)
    assert [r[0] for r in responses] == [451, 451, 451]
    assert [r[1]["content-language"] for r in responses] == ["da", "en", "da"]
    assert all("date" in r[1] for r in responses)
    assert b"FI-15124/2006" in responses[2][2]


def test_http_1_0_closes(notice: Http) -> None:
    with socket.create_connection(("127.0.0.1", notice.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: allofmp3.com\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 451 ") and b"Connection: close" in data


def test_tls_listener_with_the_isps_own_certificate(notice: Http, tmp_path: Path) -> None:
    """The optional HTTPS listener serves the notice with a configured certificate."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=notice.isp.example", "-addext",
                    "subjectAltName=DNS:notice.isp.example,DNS:allofmp3.com",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    env = {**os.environ}
    env.pop("BLOCKD_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "blockd", "serve", "http", "--db", str(notice.db), "--listen",
         "127.0.0.1:0", "--tls-listen", "127.0.0.1:0", "--cert", str(cert), "--key", str(key)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "https://127.0.0.1:" in line, line
        port = int(line.split("https://127.0.0.1:", 1)[1].split("/", 1)[0])
        context = ssl.create_default_context(cafile=str(cert))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="allofmp3.com") as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: allofmp3.com\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 451 ") and b"FI-15124/2006" in data
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    assert proc.returncode == 0


def test_tls_needs_a_loadable_certificate(notice: Http, tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a certificate")
    r = subprocess.run(
        [sys.executable, "-m", "blockd", "serve", "http", "--db", str(notice.db), "--listen",
         "127.0.0.1:0", "--tls-listen", "127.0.0.1:0", "--cert", str(tmp_path / "bad.pem"),
         "--key", str(tmp_path / "bad.pem")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("blockd: error: notice.tls_cert")


def test_transparency_can_be_turned_off(notice: Http, tmp_path: Path) -> None:
    config = tmp_path / "quiet.toml"
    config.write_text("[notice]\ntransparency = false\n")
    env = {**os.environ, "BLOCKD_CONFIG": str(config)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "blockd", "serve", "http", "--db", str(notice.db), "--listen",
         "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        quiet = Http(int(line.split("http://127.0.0.1:", 1)[1].split("/", 1)[0]),
                     notice.db, proc)
        assert quiet.get("x.example", "/.well-known/blockd/orders.json")[0] == 404
        assert quiet.get("allofmp3.com", "/.well-known/blockd/orders.json")[0] == 451
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
