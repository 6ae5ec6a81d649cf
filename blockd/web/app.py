"""The notice site: what a subscriber's browser shows when it reaches a blocked site.

Decides and renders from plain values, without sockets: the servers in ``server.py``
turn what they read into a ``Request`` and write the ``Page`` they get back.

Any path and method on a blocked Host gets 451 (RFC 7725) with the orders behind the block,
rendered from ``policies/notices/<template>.<lang>.html`` (Jinja2, autoescaped: order text
is data, never markup). A host that was blocked but no longer is gets 503 with Retry-After
(the subscriber's DNS cache still points here); an unknown host gets a neutral 404.
A connection redirected here by an address block (DNAT) is decided by the address it was
really for. Rendered pages are cached per (host, orders, language) until the index changes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from blockd.core.enforcement import EnforcementPolicy, through_chain
from blockd.core.index import BlockIndex, Decision, Match
from blockd.core.model import BlockdError, OrderRecord
from blockd.core.names import normalise_name, parse_address
from blockd.core.ports import CnameResolver, HitSink, PastBlocks
from blockd.core.timeparse import iso
from blockd.web.i18n import LANGUAGES, STRINGS, choose

log = logging.getLogger("blockd.http")

LANGUAGE_NAMES = {"en": "English", "da": "Dansk", "de": "Deutsch", "it": "Italiano"}
PAGE_CACHE = 10_000


@dataclass(frozen=True, slots=True)
class NoticeSettings:
    notice_url: str
    isp_name: str = "Your internet provider"
    isp_contact: str = ""
    transparency: bool = True
    retry_after: int = 30


@dataclass
class SiteStats:
    """Responses of the site, read by the metrics collector: plain ints on the hot path.
    ``notices_fast`` counts the 451s of the server's fast path (``fast_notice``),
    ``by_code`` everything ``respond`` answered, by HTTP status."""

    notices_fast: int = 0
    by_code: dict[int, int] = field(default_factory=dict)

    def codes(self) -> dict[str, int]:
        return {str(code): n for code, n in sorted(self.by_code.items())}


@dataclass(frozen=True, slots=True)
class Request:
    """What the site needs to know about one HTTP request (header values as sent)."""

    method: str = "GET"
    path: str = "/"
    lang: str | None = None
    """The ``?lang=`` query parameter."""
    host: str | None = None
    """The Host header."""
    accept_language: str | None = None
    original: str | None = None
    """The address the connection was for before DNAT, or None if it was not redirected."""
    client: str | None = None
    """The peer address: feeds the hits' distinct-client estimate only, never stored."""


@dataclass(frozen=True, slots=True)
class Page:
    """A complete response; the server adds Date, Content-Length and Connection."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class NoticeSite:
    """Request handling for the notice server; one per daemon."""

    def __init__(
        self, index: Callable[[], BlockIndex], enforcement: Mapping[str, EnforcementPolicy],
        templates: Path | Sequence[Path], settings: NoticeSettings, *,
        hits: HitSink | None = None,
        past: PastBlocks | None = None, healthy: Callable[[], bool] = lambda: True,
        cnames: CnameResolver | None = None,
    ) -> None:
        self.index = index
        self.enforcement = enforcement
        self.settings = settings
        self.past = past
        self.cnames = cnames
        self._chains: dict[str, Decision | None] = {}
        self.hits = hits
        self.healthy = healthy
        self.stats = SiteStats()
        layers = [str(templates)] if isinstance(templates, Path) else [str(t) for t in templates]
        # an operator's notices/ overrides the shipped templates file by file; the shipped
        # ones (the last layer) stand in for an operator's template that fails to render
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(layers),
                                      autoescape=True, undefined=jinja2.StrictUndefined)
        self._shipped = jinja2.Environment(loader=jinja2.FileSystemLoader(layers[-1:]),
                                           autoescape=True, undefined=jinja2.StrictUndefined)
        self._broken: set[str] = set()  # templates already logged as broken
        self._pages: dict[tuple[Any, ...], bytes] = {}
        self._heads: dict[tuple[str, int], bytes] = {}
        self._offered: dict[str, list[str]] = {}
        self._fast: dict[tuple[str, str | None, str | None],
                         tuple[bytes, bytes, tuple[str, str]]] = {}
        self._was_blocked: dict[str, bool] = {}
        self._seen: BlockIndex | None = None

    def forget(self) -> None:
        """Drop everything rendered or looked up (policy, templates or settings changed)."""
        self._pages.clear()
        self._heads.clear()
        self._fast.clear()
        self._offered.clear()
        self._was_blocked.clear()
        self._chains.clear()

    def _current(self) -> BlockIndex:
        """The policy in force; every cache is dropped when it changes."""
        policy = self.index()
        if policy is not self._seen:
            self.forget()
            self._seen = policy
        return policy

    # -- routing -------------------------------------------------------------------

    async def respond(self, req: Request) -> Page:
        """The page for ``req``; awaits only to ask ``past`` about a host that is not blocked."""
        page = await self._respond(req)
        by_code = self.stats.by_code
        by_code[page.status] = by_code.get(page.status, 0) + 1
        return page

    async def _respond(self, req: Request) -> Page:
        policy = self._current()
        path = req.path
        if path == "/healthz":
            ok = self.healthy()
            state = "ok" if ok else "store unreadable: enforcing the last good policy"
            return Page(200 if ok else 503,
                        {"Content-Type": "text/plain; charset=utf-8",
                         "Cache-Control": "no-store"},
                        f"{state}\njournal seq {policy.seq}\n".encode())
        if path.startswith("/.well-known/blockd/orders") and self.settings.transparency:
            return self._transparency(req, policy, json_out=path.endswith(".json"))
        if req.original is not None:  # redirected here by an address block (DNAT)
            decision = policy.decide_ip(req.original)
            if decision.blocked:
                return self._notice(req, req.original, decision)
        subject = _subject(req)
        if subject is None:
            return self._system(req, 400, "unknown_title", "unknown_body", None)
        decision = (policy.decide_ip(subject) if _is_ip(subject)
                    else policy.decide_name(subject))
        if decision.blocked:
            return self._notice(req, subject, decision)
        if not _is_ip(subject):
            chained = await self._through_cname(policy, subject)
            if chained is not None:
                return self._notice(req, subject, chained)
        if await self._previously_blocked(subject):
            page = self._system(req, 503, "lifted_title", "lifted_body", subject)
            page.headers["Retry-After"] = str(self.settings.retry_after)
            return page
        return self._system(req, 404, "unknown_title", "unknown_body", None)

    # -- blocked through a CNAME? ----------------------------------------------------

    async def _through_cname(self, index: BlockIndex, subject: str) -> Decision | None:
        """The orders behind the first name of ``subject``'s CNAME chain that is blocked
        by an order whose policy blocks through chains, as the resolver decides it
        (cached per index snapshot)."""
        if self.cnames is None:
            return None
        if subject in self._chains:
            return self._chains[subject]
        chain = await self.cnames.chain(subject)
        through = through_chain(index, chain or (), self.enforcement)
        found = Decision(subject, through[1].matches) if through is not None else None
        if len(self._chains) > PAGE_CACHE:
            self._chains.clear()
        if chain is not None:  # no answer: ask again next time
            self._chains[subject] = found
        return found

    # -- was it blocked before? ------------------------------------------------------

    async def _previously_blocked(self, subject: str) -> bool:
        """Does an order that is no longer in force name this host? (cached per policy)"""
        known = self._was_blocked.get(subject)
        if known is not None:
            return known
        try:
            found = await asyncio.to_thread(self._lookup, subject)
        except BlockdError:
            return False
        if len(self._was_blocked) > PAGE_CACHE:
            self._was_blocked.clear()
        self._chains.clear()
        self._was_blocked[subject] = found
        return found

    def _lookup(self, subject: str) -> bool:
        return self.past is not None and self.past.named_before(subject)

    # -- pages -----------------------------------------------------------------------

    def _notice(self, req: Request, subject: str, decision: Decision) -> Page:
        lang, body = self._notice_body(subject, decision, req.accept_language, req.lang,
                                       req.client)
        return Page(451, self._headers(451, lang), body)

    def _notice_body(self, subject: str, decision: Decision, accept: str | None,
                     override: str | None, client: str | None) -> tuple[str, bytes]:
        """(language, page) for a blocked subject; rendered once per policy snapshot."""
        primary = decision.matches[0]
        policy = self.enforcement.get(primary.order.policy) or self.enforcement["default"]
        offered = self._offered.get(policy.name)
        if offered is None:
            offered = self._offered[policy.name] = [
                lang for lang in policy.languages
                if self._template_exists(policy.notice_template, lang)] or ["en"]
        lang = choose(offered, accept, override)
        refs = tuple(m.order.reference for m in decision.matches)
        key = (subject, refs, lang)
        body = self._pages.get(key)
        if body is None:
            body = self._render_notice(policy, lang, offered, subject, decision.matches)
            if len(self._pages) >= PAGE_CACHE:
                self._pages.clear()
            self._pages[key] = body
        if self.hits is not None:
            self.hits.add(primary.order.reference, primary.target.spec, 1, client)
        return lang, body

    def fast_notice(self, host: str, accept: str | None, override: str | None,
                    client: str | None = None) -> tuple[bytes, bytes] | None:
        """The 451 response head (without Date and the blank line) and body, or None.

        Used by the notice server's fast path (plain GET/HEAD with a Host name; ``host``
        is the Host header, ``accept`` Accept-Language, ``override`` ``?lang=``). Anything
        else, and any host that is not blocked, goes through ``respond``.
        """
        policy = self._current()
        key = (host, accept, override)
        memo = self._fast.get(key)
        if memo is not None:
            head, body, hit = memo
            if self.hits is not None:
                self.hits.add(hit[0], hit[1], 1, client)
            self.stats.notices_fast += 1
            return head, body
        try:
            subject = normalise_name(host.rsplit(":", 1)[0] if host.count(":") == 1 else host,
                                     "Host")
        except BlockdError:
            return None
        decision = policy.decide_name(subject)
        if not decision.blocked:
            return None
        lang, body = self._notice_body(subject, decision, accept, override, client)
        built = self._heads.get((lang, len(body)))
        if built is None:
            headers = self._headers(451, lang)
            headers["Content-Length"] = str(len(body))
            built = ("HTTP/1.1 451 Unavailable For Legal Reasons\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in headers.items())).encode("latin-1")
            self._heads[(lang, len(body))] = built
        head = built
        if len(self._fast) >= PAGE_CACHE:
            self._fast.clear()
        primary = decision.matches[0]
        self._fast[key] = (head, body, (primary.order.reference, primary.target.spec))
        self.stats.notices_fast += 1
        return head, body

    def _template_exists(self, template: str, lang: str) -> bool:
        try:
            self.env.get_template(f"{template}.{lang}.html")
            return True
        except jinja2.TemplateNotFound:
            return False

    def _render_notice(self, policy: EnforcementPolicy, lang: str, offered: list[str],
                       subject: str, matches: tuple[Match, ...]) -> bytes:
        name = f"{policy.notice_template}.{lang}.html"
        if not self._template_exists(policy.notice_template, lang):
            name = f"default.{lang}.html" if lang in LANGUAGES else "default.en.html"
        values = dict(**self._common(lang, offered), host=subject,
                      orders=[_order_view(m.order) for m in matches])
        try:
            return self.env.get_template(name).render(**values).encode("utf-8")
        except jinja2.TemplateError as exc:  # an operator's edit: the subscriber still
            if name not in self._broken:      # gets a notice, from the shipped template
                self._broken.add(name)
                log.error("notice template %s does not render (%s: %s); using the shipped "
                          "one", name, type(exc).__name__, exc)
        fallback = name if self._shipped_exists(name) else "default.en.html"
        return self._shipped.get_template(fallback).render(**values).encode("utf-8")

    def _shipped_exists(self, name: str) -> bool:
        try:
            self._shipped.get_template(name)
            return True
        except jinja2.TemplateNotFound:
            return False

    def _common(self, lang: str, offered: list[str]) -> dict[str, Any]:
        return {
            "lang": lang, "languages": offered, "language_names": LANGUAGE_NAMES,
            "isp_name": self.settings.isp_name, "isp_contact": self.settings.isp_contact,
            "notice_url": self.settings.notice_url,
        }

    def _system(self, req: Request, status: int, title: str, body: str,
                host: str | None, **extra: Any) -> Page:
        lang = choose(list(LANGUAGES), req.accept_language, req.lang)
        s = STRINGS[lang]
        html = self.env.get_template("_system.html").render(
            **self._common(lang, list(LANGUAGES)), title=s[title], body=s[body], host=host,
            S=s, **extra)
        return Page(status, self._headers(status, lang), html.encode("utf-8"))

    def _headers(self, status: int, lang: str) -> dict[str, str]:
        headers = {
            "Content-Type": "text/html; charset=utf-8",
            "Cache-Control": "no-store",
            "Content-Language": lang,
            "Vary": "Accept-Language",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                       "img-src data:; base-uri 'none'; form-action 'none'",
            "Referrer-Policy": "no-referrer",
        }
        if status == 451:
            headers["Link"] = f'<{self.settings.notice_url}>; rel="blocked-by"'
        return headers

    def _transparency(self, req: Request, policy: BlockIndex, *, json_out: bool) -> Page:
        orders: dict[str, dict[str, Any]] = {}
        for order, target in policy.entries():
            view = orders.setdefault(order.reference, {**_order_view(order), "targets": []})
            view["targets"].append(target.spec)
        listing = sorted(orders.values(), key=lambda o: (o["issued_on"], o["reference"]))
        for o in listing:
            o["targets"].sort()
        if json_out:
            data = {"journal_seq": policy.seq, "generated_at": iso(policy.at),
                    "orders": listing}
            return Page(200, {"Content-Type": "application/json; charset=utf-8",
                              "Cache-Control": "no-store"},
                        json.dumps(data, ensure_ascii=False).encode("utf-8"))
        return self._system(req, 200, "orders_title", "orders_intro", None,
                            orders=listing)


def _order_view(order: OrderRecord) -> dict[str, Any]:
    return {
        "reference": order.reference, "authority": order.authority,
        "jurisdiction": order.jurisdiction, "issued_on": order.issued_on.isoformat(),
        "requested_by": order.requested_by, "legal_basis": order.legal_basis,
        "effective_until": iso(order.effective_until), "contact": order.contact,
        "appeal": order.appeal, "notice": order.notice,
    }


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _subject(req: Request) -> str | None:
    """The name from Host, or for an IP literal or no Host, the original destination."""
    host = (req.host or "").strip()
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host and not _is_ip(host):
        try:
            return normalise_name(host, "Host")
        except BlockdError:
            return None
    if req.original is not None:
        return req.original
    if host:
        address = parse_address(host)
        return address.value if address is not None else None
    return None
