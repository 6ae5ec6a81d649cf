"""The notice site without sockets: plain Request values in, Page values out.

The index is compiled from order records, the enforcement policies and notice templates
are the repository's own; hits go to a recording HitSink and "was it blocked before?" to
a fake PastBlocks (an interface: the store behind it is tested elsewhere).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime
from typing import Any

import pytest

from blockd.config import default_policies_dir, load_policies
from blockd.core.index import BlockIndex, compile_index
from blockd.core.model import BlockdError, OrderRecord
from blockd.core.names import parse_target
from blockd.web.app import NoticeSettings, NoticeSite, Page, Request

NOW = datetime(2026, 1, 1, tzinfo=UTC)
URL = "https://isp.example/blocking"


def order(reference: str, policy: str, *targets: str, **facts: Any) -> OrderRecord:
    return OrderRecord(reference, facts.pop("authority", "Copenhagen City Court"),
                       date(2006, 10, 25), NOW, policy=policy,
                       targets=frozenset(parse_target(t) for t in targets), **facts)


ORDERS = [
    order("FI-15124/2006", "dk", "allofmp3.com", requested_by="IFPI Danmark"),
    order("DE-1", "de", "gesperrt.example", authority="LG München I"),
    order("IP-1", "default", "192.0.2.7", authority="High Court"),
]


class Hits:
    def __init__(self) -> None:
        self.added: list[tuple[str, str, int]] = []

    def add(self, reference: str, target: str, count: int = 1,
            client: str | None = None) -> None:
        self.added.append((reference, target, count))


class Past:
    def __init__(self, *names: str, broken: bool = False) -> None:
        self.names = set(names)
        self.broken = broken
        self.asked: list[str] = []

    def named_before(self, subject: str) -> bool:
        self.asked.append(subject)
        if self.broken:
            raise BlockdError("store unreadable")
        return subject in self.names


class World:
    """A site with its index, hits and past blocks, all replaceable by the test."""

    def __init__(self, *, transparency: bool = True, past: Past | None = None) -> None:
        self.index: BlockIndex = compile_index(ORDERS, NOW)
        self.hits = Hits()
        self.past = past or Past("lifted.example")
        self.healthy = True
        self.site = NoticeSite(
            lambda: self.index, load_policies(default_policies_dir()),
            default_policies_dir() / "notices",
            NoticeSettings(URL, isp_name="Example ISP", isp_contact="support@isp.example",
                           transparency=transparency, retry_after=17),
            hits=self.hits, past=self.past, healthy=lambda: self.healthy)

    def get(self, host: str | None = None, path: str = "/", **fields: Any) -> Page:
        return asyncio.run(self.site.respond(Request(path=path, host=host, **fields)))


@pytest.fixture
def world() -> World:
    return World()


def text(page: Page) -> str:
    return page.body.decode("utf-8")


def test_451_with_link_and_no_store(world: World) -> None:
    page = world.get("www.allofmp3.com:80", "/any/path")
    assert page.status == 451
    assert page.headers["Link"] == f'<{URL}>; rel="blocked-by"'
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.headers["Content-Language"] == "da"  # the Danish policy's first language
    for fact in ("FI-15124/2006", "Copenhagen City Court", "IFPI Danmark",
                 "support@isp.example", "www.allofmp3.com"):
        assert fact in text(page)


@pytest.mark.parametrize(("host", "accept", "override", "lang"), [
    ("allofmp3.com", "en-GB,en;q=0.9", None, "en"),
    ("allofmp3.com", "en;q=0.2, da;q=0.9", None, "da"),
    ("allofmp3.com", "fr", None, "da"),
    ("allofmp3.com", "da", "en", "en"),
    ("allofmp3.com", None, "fr", "da"),
    ("gesperrt.example", "de-DE", None, "de"),
    ("gesperrt.example", None, "en", "en"),
    ("example.org", "it", None, "it"),  # the system pages speak every language
])
def test_language_from_accept_language_and_query(world: World, host: str, accept: str | None,
                                                  override: str | None, lang: str) -> None:
    page = world.get(host, accept_language=accept, lang=override)
    assert page.headers["Content-Language"] == lang
    assert f'<html lang="{lang}">' in text(page)
    assert page.headers["Vary"] == "Accept-Language"


def test_lifted_order_gets_503_with_retry_after(world: World) -> None:
    page = world.get("lifted.example")
    assert page.status == 503
    assert page.headers["Retry-After"] == "17"
    assert "no longer blocked" in text(page)
    assert "Link" not in page.headers
    world.get("lifted.example")
    assert world.past.asked == ["lifted.example"]  # remembered for this index


def test_unknown_host_gets_a_neutral_404(world: World) -> None:
    page = world.get("example.org")
    assert page.status == 404 and "Nothing is blocked here" in text(page)
    assert "Link" not in page.headers and "example.org" not in text(page)
    assert world.hits.added == []


def test_past_blocks_that_cannot_answer_mean_404() -> None:
    world = World(past=Past("lifted.example", broken=True))
    assert world.get("lifted.example").status == 404


@pytest.mark.parametrize("host", ["bad host!", "", None, "-.example"])
def test_unusable_host_without_redirect_is_400(world: World, host: str | None) -> None:
    assert world.get(host).status == 400


def test_original_destination_decides_for_an_ip(world: World) -> None:
    """A connection DNAT'd here by an address block: the Host says nothing useful."""
    for host in (None, "example.org", "198.51.100.1"):
        page = world.get(host, original="192.0.2.7")
        assert page.status == 451 and "IP-1" in text(page) and "192.0.2.7" in text(page)
    assert world.get("192.0.2.7").status == 451  # an IP literal in Host
    assert world.get("[2001:db8::1]:80").status == 404
    # redirected for an address that is not blocked: the Host decides
    assert world.get("allofmp3.com", original="198.51.100.1").status == 451
    assert world.get(None, original="198.51.100.1").status == 404


def test_transparency_list(world: World) -> None:
    page = world.get("anything", "/.well-known/blockd/orders.json")
    assert page.status == 200
    assert page.headers["Content-Type"] == "application/json; charset=utf-8"
    assert page.headers["Cache-Control"] == "no-store"
    data = json.loads(page.body)
    assert data["journal_seq"] == 0
    refs = {o["reference"]: o for o in data["orders"]}
    assert refs["FI-15124/2006"]["targets"] == ["allofmp3.com"]
    assert refs["DE-1"]["authority"] == "LG München I"  # not escaped: JSON is UTF-8
    html = world.get("anything", "/.well-known/blockd/orders")
    assert html.status == 200 and "FI-15124/2006" in text(html)


def test_transparency_can_be_turned_off() -> None:
    world = World(transparency=False)
    assert world.get("x.example", "/.well-known/blockd/orders.json").status == 404
    assert world.get("allofmp3.com", "/.well-known/blockd/orders.json").status == 451


def test_healthz_reports_the_journal_seq(world: World) -> None:
    page = world.get("x", "/healthz")
    assert (page.status, page.body) == (200, b"ok\njournal seq 0\n")
    assert page.headers["Cache-Control"] == "no-store"
    world.healthy = False
    page = world.get("allofmp3.com", "/healthz")
    assert page.status == 503 and page.body.endswith(b"\njournal seq 0\n")


def test_hits_are_counted_for_every_notice(world: World) -> None:
    world.get("www.allofmp3.com")
    world.get("allofmp3.com", accept_language="en")
    world.get("example.org")
    assert world.site.fast_notice("allofmp3.com", None, None) is not None
    assert world.site.fast_notice("allofmp3.com", None, None) is not None  # remembered
    assert world.site.fast_notice("example.org", None, None) is None
    assert world.hits.added == [("FI-15124/2006", "allofmp3.com", 1)] * 4


def test_fast_notice_is_the_same_page(world: World) -> None:
    page = world.get("www.allofmp3.com", accept_language="en")
    fast = world.site.fast_notice("www.allofmp3.com", "en", None)
    assert fast is not None
    head, body = fast
    assert body == page.body
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == "HTTP/1.1 451 Unavailable For Legal Reasons" and lines[-1] == ""
    headers = dict(line.split(": ", 1) for line in lines[1:-1])
    assert headers == {**page.headers, "Content-Length": str(len(page.body))}
    assert world.site.fast_notice("bad host!", None, None) is None


def test_caches_are_dropped_when_the_index_changes(world: World) -> None:
    assert world.get("lifted.example").status == 503
    assert "Copenhagen City Court" in text(world.get("allofmp3.com"))
    assert world.site.fast_notice("allofmp3.com", None, None) is not None
    # the same references with other facts: a new index object, so nothing stale is served
    world.index = compile_index([order("FI-15124/2006", "dk", "allofmp3.com",
                                       authority="Østre Landsret")], NOW)
    assert "Østre Landsret" in text(world.get("allofmp3.com"))
    fast = world.site.fast_notice("allofmp3.com", None, None)
    assert fast is not None and "Østre Landsret".encode() in fast[1]
    world.index = compile_index([], NOW)
    assert world.site.fast_notice("allofmp3.com", None, None) is None
    assert world.get("allofmp3.com").status == 404
    world.past.names.add("allofmp3.com")
    assert world.get("lifted.example").status == 503
    assert world.past.asked.count("lifted.example") == 2  # asked again for the new index
    world.site.forget()
    assert world.get("allofmp3.com").status == 503


def test_hostile_order_text_is_escaped() -> None:
    world = World()
    world.index = compile_index([order("UK-1", "uk", "counterfeit.example",
                                       authority='<script>alert("x")</script> {{ 7*7 }}')], NOW)
    body = text(world.get("counterfeit.example"))
    assert "<script>" not in body and "&lt;script&gt;" in body and "{{ 7*7 }}" in body
