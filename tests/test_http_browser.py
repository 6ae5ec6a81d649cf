"""Debian's Chromium, headless, driven by Playwright: what a subscriber actually sees.

The browser resolves the blocked names to the notice server on loopback
(--host-resolver-rules), as a subscriber's would through blockd's DNS answer.
Screenshots are saved under test-artifacts/.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Http
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-dev-shm-usage"]


@pytest.mark.parametrize(("host", "lang", "heading", "width"), [
    ("www.allofmp3.com", "da", "Siden er blokeret efter en retskendelse", 1280),
    ("www.allofmp3.com", "en", "This site is blocked by court order", 390),
    ("gesperrt.example", "de", "Diese Seite ist aufgrund einer Anordnung gesperrt", 1280),
    ("bloccato.example", "it", "Questo sito è bloccato per ordine dell'autorità", 390),
])
def test_browser_shows_the_notice(notice: Http, tmp_path: Path, host: str,
                                  lang: str, heading: str, width: int) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    rules = ",".join(f"MAP {h} 127.0.0.1" for h in
                     ("www.allofmp3.com", "gesperrt.example", "bloccato.example"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=[*FLAGS, f"--host-resolver-rules={rules}"])
        try:
            context = browser.new_context(locale=lang, viewport={"width": width,
                                                                  "height": 900})
            page = context.new_page()
            response = page.goto(f"http://{host}:{notice.port}/some/page")
            assert response is not None and response.status == 451
            assert page.locator("h1").inner_text() == heading
            assert page.locator("html").get_attribute("lang") == lang
            text = page.locator("main").inner_text()
            assert host in text
            assert "support@isp.example" in text
            # the page is usable at this width: nothing overflows horizontally
            overflow = page.evaluate(
                "document.documentElement.scrollWidth > document.documentElement.clientWidth")
            assert overflow is False
            page.screenshot(path=str(ARTIFACTS / f"notice-{host}-{lang}-{width}.png"),
                            full_page=True)
        finally:
            browser.close()
