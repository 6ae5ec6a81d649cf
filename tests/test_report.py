"""`blockd report` from a store the real daemons, verify and the CLI wrote; the HTML in
headless Chromium at A4 and phone width (screenshots and a PDF under test-artifacts/)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import db_digest
from daemons import free_port
from dnsstub import StubUpstream
from pgserver import STORES, PgServer
from playwright.sync_api import sync_playwright
from test_http_browser import ARTIFACTS, CHROMIUM, FLAGS

from blockd.core.hits import HitBucket
from blockd.store.store import Store


def run_cli(config: Path, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BLOCKD_CONFIG": str(config), "BLOCKD_ACTOR": "engineer@isp"}
    return subprocess.run([sys.executable, "-m", "blockd", *args, "--db", str(db)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


@pytest.fixture(scope="module", params=STORES)
def record(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Path, Path]]:
    """(config, db): an order received 20 days ago under the dk policy (7 working days),
    amended, with a target added and one removed, enforced by real daemons, verified; in
    a SQLite file, then in PostgreSQL (db is then its URL)."""
    tmp = tmp_path_factory.mktemp("report")
    dns_port, http_port = free_port(), free_port()
    with StubUpstream(["ok.example. 300 IN A 192.0.2.1"]) as upstream:
        config = tmp / "blockd.toml"
        config.write_text(
            f'[dns]\nlisten = ["127.0.0.1:{dns_port}"]\n'
            f'upstream = ["127.0.0.1:{upstream.port}"]\nupstream_timeout = 0.3\n'
            f'[notice]\nlisten = ["127.0.0.1:{http_port}"]\nipv4 = "127.0.0.80"\n'
            'resolve_cnames = false\n[hits]\nflush_interval = 0.2\n'
            f'[store]\nstate_dir = "{tmp / "state"}"\n')
        db = tmp / "blockd.db"
        if request.param == "postgresql":
            server: PgServer = request.getfixturevalue("pg_server")
            db = server.url(server.new_database())  # type: ignore[assignment]
        received = datetime.now(UTC) - timedelta(days=20)
        steps = [
            ("init",),
            ("order", "add", "FI-15124/2006", "--authority", "Københavns Byret <b>&</b>",
             "--issued", (received - timedelta(days=2)).date().isoformat(), "--received",
             received.strftime("%Y-%m-%dT%H:%M"), "--policy", "dk", "--requested-by",
             "IFPI Danmark", "allofmp3.com", "allofmp3.ru"),
            ("order", "target", "add", "FI-15124/2006", "mp3sparks.com"),
            ("order", "target", "remove", "FI-15124/2006", "allofmp3.ru"),
            ("order", "amend", "FI-15124/2006", "--appeal", "Østre Landsret, within 4 weeks",
             "--reason", "appeal route added by the court"),
        ]
        for step in steps:
            r = run_cli(config, db, *step)
            assert r.returncode == 0, r.stderr
        procs = []
        env = {**os.environ, "BLOCKD_CONFIG": str(config)}
        for kind in ("dns", "http"):
            proc = subprocess.Popen([sys.executable, "-m", "blockd", "serve", kind, "--db",
                                     str(db)], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True, env=env)
            assert proc.stdout is not None and proc.stdout.readline()
            procs.append(proc)
        try:
            assert run_cli(config, db, "verify").returncode == 0
            time.sleep(0.6)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=10)
    store = Store.open(str(db))  # earlier days of hits, as the daemons' flushes write them
    try:
        today = datetime.now(UTC).date()
        store.add_hits([HitBucket(today - timedelta(days=d), "FI-15124/2006", "allofmp3.com",
                                  "dns", 10 * d) for d in range(1, 15)])
    finally:
        store.close()
    yield config, db


def test_the_json_report_holds_the_record(record: tuple[Path, Path]) -> None:
    config, db = record
    r = run_cli(config, db, "report", "FI-15124/2006", "--format", "json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert "deadline MISSED" in data["summary"] and data["enforcement"]["verdict"] == "missed"
    assert {c["channel"] for c in data["enforcement"]["channels"]} == {"dns", "http"}
    targets = {t["target"]: t for t in data["targets"]}
    assert targets["allofmp3.ru"]["removed_seq"] == 3 and targets["mp3sparks.com"]["added_seq"] == 2
    log = json.loads(run_cli(config, db, "audit", "log", "--json").stdout)
    assert [(e["seq"], e["hash"]) for e in data["journal"]] == \
        [(e["seq"], e["hash"]) for e in log]
    head = data["journal_head"]
    assert run_cli(config, db, "audit", "verify", "--anchor",
                   f"{head['seq']}:{head['hash']}").returncode == 0
    # the earlier days, and verify's probes: 2 targets, each the name and a subdomain
    earlier = sum(10 * d for d in range(1, 15))
    assert data["hits"]["by_channel"] == {"dns": earlier + 4, "http": 4}
    assert data["hits"]["total"] == earlier + 8
    assert data["verify"]["failed"] == 0 and data["verify"]["checked"] > 0


def test_the_html_report_renders_in_chromium(record: tuple[Path, Path],
                                             tmp_path: Path) -> None:
    config, db = record
    out = tmp_path / "report.html"
    r = run_cli(config, db, "report", "FI-15124/2006", "-o", str(out))
    assert r.returncode == 0, r.stderr
    html = out.read_text()
    assert "<script" not in html and 'src="http' not in html and "<link" not in html
    assert "Københavns Byret &lt;b&gt;&amp;&lt;/b&gt;" in html  # escaped, not markup
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            for name, width in (("a4", 794), ("phone", 390)):
                page = browser.new_page(viewport={"width": width, "height": 1123})
                page.goto(out.as_uri())
                assert page.locator("h1").inner_text() == \
                    "Enforcement report: order FI-15124/2006"
                summary = page.locator("section.summary").inner_text()
                assert "deadline MISSED" in summary and "10 of 10" not in summary
                assert page.locator("svg.chart rect").count() == 14 + 1  # 14 days + today
                overflow = page.evaluate("document.documentElement.scrollWidth > "
                                         "document.documentElement.clientWidth")
                assert overflow is False, name
                page.screenshot(path=str(ARTIFACTS / f"report-{name}.png"), full_page=True)
            page.emulate_media(media="print")
            pdf = page.pdf(format="A4", path=str(ARTIFACTS / "report-a4.pdf"))
            assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page") >= 2
        finally:
            browser.close()


@pytest.mark.parametrize(("args", "field"), [
    (("NOPE-1",), "reference"),
    (("FI-15124/2006", "--format", "xml"), "--format"),
    (("FI-15124/2006", "-o", ""), "--output"),
    (("FI-15124/2006", "-o", "/nonexistent/dir/r.html"), "--output"),
])
def test_bad_input_is_refused(record: tuple[Path, Path], args: tuple[str, ...],
                              field: str) -> None:
    config, db = record
    before = db_digest(db)
    r = run_cli(config, db, "report", *args)
    assert r.returncode == 2 and field in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert db_digest(db) == before
