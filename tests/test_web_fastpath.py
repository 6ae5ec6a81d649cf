"""The notice server's fast path against a real HTTP parser (h11), without sockets.

The fast path may answer only what h11 reads as a complete GET or HEAD request with exactly
one Host header and no body, and must read it the same way (Host, Accept-Language,
``?lang=``, whether the connection closes after the response). Everything else is handed,
with every byte buffered, to aiohttp. Request heads come from a grammar with hostile
variations.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast
from urllib.parse import parse_qsl, urlsplit

import h11
import pytest
from aiohttp.web_protocol import RequestHandler
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from blockd.web.server import FastProtocol, fast_reply, parse_head

START = b"HTTP/1.1 451 Unavailable For Legal Reasons\r\nContent-Length: 4\r\n"


class FakeSite:
    """Has a notice for every host, so that only the parsing decides."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str | None, str | None]] = []

    def fast_notice(self, host: str, accept: str | None, override: str | None,
                    client: str | None = None) -> tuple[bytes, bytes] | None:
        self.asked.append((host, accept, override))
        return START, b"body"


class FakeTransport:
    def __init__(self, protocol: asyncio.Protocol) -> None:
        self.protocol = protocol
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def set_protocol(self, protocol: asyncio.Protocol) -> None:
        self.protocol = protocol

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


class FakeHandler(asyncio.Protocol):
    """Stands in for aiohttp's handler: records what it is handed."""

    def __init__(self) -> None:
        self.transport: object = None
        self.received = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += data


# -- what h11 reads ------------------------------------------------------------------

class H11:
    """h11's reading of the first request in ``data``."""

    def __init__(self, data: bytes) -> None:
        self.state = "incomplete"
        self.plain = False
        self.host: str | None = None
        self.accept: str | None = None
        self.lang: str | None = None
        self.close = False
        self.rest = b""
        conn = h11.Connection(h11.SERVER)
        if data:  # b"" would mean the client closed
            conn.receive_data(data)
        try:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                return
            self.state = "request"
            assert isinstance(event, h11.Request)
            after = conn.next_event()
        except h11.RemoteProtocolError:
            self.state = "invalid"
            return
        hosts = [v for k, v in event.headers if k == b"host"]
        accepts = [v for k, v in event.headers if k == b"accept-language"]
        self.plain = (event.method in (b"GET", b"HEAD") and len(hosts) == 1
                      and isinstance(after, h11.EndOfMessage))
        if not self.plain:
            return
        self.host = hosts[0].decode("latin-1")
        self.accept = accepts[0].decode("latin-1") if len(accepts) == 1 else None
        query = urlsplit(event.target.decode("ascii")).query
        self.lang = next((v for k, v in parse_qsl(query, keep_blank_values=True)
                          if k == "lang"), None)
        self.get = event.method == b"GET"
        self.rest = conn.trailing_data[0]
        conn.send(h11.Response(status_code=451, headers=[("Content-Length", "0")]))
        conn.send(h11.EndOfMessage())
        self.close = conn.our_state is h11.MUST_CLOSE


# -- a grammar of request heads, with hostile variations -------------------------------

methods = st.sampled_from([b"GET", b"GET", b"HEAD", b"get", b"Get", b"POST", b"OPTIONS",
                           b"GETX", b"G\xc3\x89T", b""])
targets = st.one_of(
    st.sampled_from([
        b"/", b"/some/page", b"/?lang=en", b"/x?a=1&lang=da&lang=en", b"/?lang&lang=en",
        b"/?lang=", b"/?lang=e%6E", b"/?l%61ng=en", b"/?lang=d+a", b"/?lang=en#x",
        b"/#x?lang=de", b"http://allofmp3.com/", b"//allofmp3.com/", b"*",
        b"allofmp3.com:80", b"/healthz", b"/healthz?x", b"/.well-known/blockd/orders",
        b"/caf\xc3\xa9", b"/a\tb", b"/a\x00b", b"/a\x7fb", b"/a\x01", b"",
        b"/" + b"a" * 5000]),
    st.binary(max_size=6).map(lambda b: b"/" + b))
versions = st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0",
                            b"http/1.1", b"HTTP/1.10", b"HTTP/1", b"HTTP/1.1 ", b""])
spaces = st.sampled_from([b" ", b" ", b" ", b"  ", b"\t"])
names = st.sampled_from([b"Host", b"Host", b"host", b"HOST", b"Accept-Language",
                         b"accept-language", b"Connection", b"Content-Length",
                         b"Transfer-Encoding", b"Expect", b"Upgrade", b"User-Agent",
                         b"X-Foo", b"Bad Name", b"Host\x00", b"H\xc3\xb6st", b"X(y)",
                         b"", b" Host", b"\tX-Foo"])
colons = st.sampled_from([b":", b": ", b": ", b" :", b":\t", b":  ", b"\t:", b""])
values = st.one_of(
    st.sampled_from([
        b"allofmp3.com", b"www.allofmp3.com:80", b"[::1]:80", b"da", b"en;q=0.2, da",
        b"close", b"Close", b"keep-alive", b"keep-alive, close", b"closed", b"upgrade",
        b"0", b"00", b"5", b"-1", b"chunked", b"100-continue", b"", b"a b",
        b"caf\xc3\xa9", b"a\x00b", b"a\x0bb", b"a\x0cb", b"a\x01b", b"a\x7f", b"a\rb",
        b"a\nb", b"a\n b", b"x" * 5000]),
    st.binary(max_size=6))
ends = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r"])
fields = st.tuples(names, colons, values, st.sampled_from([b"", b" ", b"\t"]), ends).map(
    b"".join)
folds = st.tuples(st.sampled_from([b" ", b"\t"]), values, ends).map(b"".join)
lines = st.lists(st.one_of(fields, fields, fields, folds), max_size=8)


clean_targets = st.sampled_from([
    b"/", b"/some/page", b"/a#b", b"/?lang=en", b"/?lang=it", b"/x?a=1&lang=da&lang=en",
    b"/?lang&lang=en", b"/?lang=", b"/?lang=e%6E", b"/?l%61ng=en", b"/?lang=d+a",
    b"/?lang=en#x", b"/#x?lang=de", b"/healthz", b"/.well-known/blockd/orders"])
clean_fields = st.tuples(
    st.sampled_from([b"Host", b"Accept-Language", b"accept-language", b"Connection",
                     b"Content-Length", b"Transfer-Encoding", b"User-Agent", b"Accept"]),
    st.sampled_from([b": ", b":", b":\t"]),
    st.sampled_from([b"da", b"en;q=0.2, da", b"close", b"Close", b"keep-alive",
                     b"keep-alive, close", b"closed", b"0", b"1", b"text/html",
                     b"Mozilla/5.0 (X11)", b"allofmp3.com"]),
    st.sampled_from([b"", b" "]), st.just(b"\r\n")).map(b"".join)


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """A request line, header lines (maybe many), a blank line, maybe a body.

    Half of them are nearly plain (a good request line, a Host line, CRLFs) with at most
    one hostile line, so that the fast path answers often enough to be compared.
    """
    if draw(st.booleans()):
        line = draw(st.tuples(methods, spaces, targets, spaces, versions, ends).map(b"".join))
        head = draw(lines)
        blank = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b""]))
    else:
        line = draw(st.tuples(st.sampled_from([b"GET", b"HEAD"]), st.just(b" "),
                              clean_targets, st.just(b" "),
                              st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]),
                              st.just(b"\r\n")).map(b"".join))
        host = draw(st.sampled_from([b"allofmp3.com", b"www.allofmp3.com:80", b"x"]))
        head = [b"Host: " + host + b"\r\n", *draw(st.lists(clean_fields, max_size=4))]
        if draw(st.booleans()):
            head.insert(draw(st.integers(0, len(head))), draw(st.one_of(fields, folds)))
        blank = b"\r\n"
    filler = [b"X-Filler: v\r\n"] * draw(st.sampled_from([0] * 12 + [46, 47, 48, 49, 60]))
    head[draw(st.integers(0, len(head))):0] = filler
    body = draw(st.sampled_from([
        b"", b"", b"user=x", b"GET / HTTP/1.1\r\nHost: allofmp3.com\r\n\r\n",
        b"0\r\n\r\n"]))
    return line + b"".join(head) + blank + body


PLAIN = [
    b"GET / HTTP/1.1\r\nHost: allofmp3.com\r\n\r\n",
    b"HEAD /x?lang=en HTTP/1.0\r\nHost: allofmp3.com:80\r\nAccept-Language: da\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost:allofmp3.com\r\nConnection: keep-alive, close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1\r\n",
]
HOSTILE = [  # read differently or refused by h11, or (the last ones) not plain enough
    b"GET / HTTP/1.1\r\nHost: allofmp3.com\r\nHost: example.org\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : allofmp3.com\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: example.org\r\n X-Foo: allofmp3.com\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Foo: a\r\n Host: allofmp3.com\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: allofmp3.com\nContent-Length: 5\r\n\r\nuser=",
    b"GET / HTTP/1.1\r\nHost: allofmp3.com\r\nX-Foo: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: allofmp3.com\r\nBad Name: x\r\n\r\n",
    b"GET /a\x7f HTTP/1.1\r\nHost: allofmp3.com\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: allofmp3.com\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: allofmp3.com\r\nContent-Length: 6\r\n\r\nuser=x",
    b"get / HTTP/1.1\r\nHost: allofmp3.com\r\n\r\n",
    b"GET http://allofmp3.com/ HTTP/1.1\r\nHost: allofmp3.com\r\n\r\n",
]


def replay(data: bytes) -> tuple[list[bytes], int]:
    """What the fast path answers in ``data``, in order, and where it stops reading."""
    answers, pos = [], 0
    while (end := data.find(b"\r\n\r\n", pos)) >= 0:
        reply = fast_reply(FakeSite(), data[pos:end])
        if reply is None:
            break
        answers.append(reply[0])
        pos = end + 4
        if reply[1]:
            break
    return answers, pos


def check_decision(data: bytes) -> None:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return
    site = FakeSite()
    reply = fast_reply(site, data[:end])
    assert (reply is None) == (parse_head(data[:end]) is None or not site.asked)
    if reply is None:
        return
    h = H11(data)
    assert h.state == "request" and h.plain, (data, h.state)
    assert site.asked == [(h.host, h.accept, h.lang)]
    message, close = reply
    assert close == h.close
    assert message.startswith(START) and message.endswith(b"\r\n\r\nbody" if h.get
                                                           else b"\r\n\r\n")
    assert (b"\r\nConnection: close\r\n" in message) == close
    assert data[end + 4:] == h.rest  # both stop reading at the same byte


@given(heads())
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(PLAIN[0])
@example(b"GET /?lang&lang=en HTTP/1.1\r\nHost: a\r\n\r\n")
@example(b"GET /#x?lang=de HTTP/1.1\r\nHost: a\r\n\r\n")
def test_answers_only_what_h11_reads_as_plain_get_or_head(data: bytes) -> None:
    check_decision(data)


@pytest.mark.parametrize("data", PLAIN)
def test_plain_requests_are_answered(data: bytes) -> None:
    end = data.find(b"\r\n\r\n")
    assert fast_reply(FakeSite(), data[:end]) is not None
    check_decision(data)


@pytest.mark.parametrize("data", HOSTILE)
def test_hostile_heads_are_handed_over(data: bytes) -> None:
    end = data.find(b"\r\n\r\n")
    assert fast_reply(FakeSite(), data[:end]) is None
    transport, handler, _ = drive([data])
    assert transport.written == [] and handler.received == data


def test_not_blocked_is_handed_over() -> None:
    class Nothing(FakeSite):
        def fast_notice(self, host: str, accept: str | None, override: str | None,
                        client: str | None = None) -> tuple[bytes, bytes] | None:
            return None

    assert fast_reply(Nothing(), PLAIN[0][:-4]) is None


# -- the protocol: hand-over keeps every buffered byte ---------------------------------

def drive(chunks: list[bytes]) -> tuple[FakeTransport, FakeHandler, FastProtocol]:
    handler = FakeHandler()

    async def run() -> tuple[FakeTransport, FastProtocol]:
        protocol = FastProtocol(FakeSite(), cast(Callable[[], RequestHandler],
                                                 lambda: handler))
        transport = FakeTransport(protocol)
        protocol.connection_made(cast(asyncio.Transport, transport))
        for chunk in chunks:
            if transport.closed:
                break
            transport.protocol.data_received(chunk)
        if transport.protocol is protocol:
            protocol.connection_lost(None)
        return transport, protocol

    transport, protocol = asyncio.run(run())
    return transport, handler, protocol


@given(heads(), st.lists(st.integers(0, 200), max_size=4))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(b"".join(PLAIN[:2]), [])
@example(b"GET / HTTP/1.1\nHost: allofmp3.com\n\n", [])
def test_protocol_answers_or_hands_over_everything(data: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    transport, handler, _ = drive([c for c in chunks if c])
    answers, pos = replay(data)
    assert [w.split(b"\r\nDate: ")[0] for w in transport.written] == [
        a.split(b"\r\nDate: ")[0] for a in answers]
    if transport.closed:
        assert handler.transport is None
    elif handler.transport is not None:
        assert handler.transport is transport and transport.protocol is handler
        assert handler.received == data[pos:]  # nothing lost, nothing answered twice
    else:  # still waiting for the end of a head
        rest = data[pos:]
        assert b"\r\n\r\n" not in rest and len(rest) <= 8192
        assert b"\n\n" not in rest and b"\n\r\n" not in rest
        # h11 has not read a request either (it may refuse a bad start early)
        assert H11(rest).state in ("incomplete", "invalid")


def test_hand_over_after_answers_keeps_the_served_mark() -> None:
    post = b"POST / HTTP/1.1\r\nHost: allofmp3.com\r\nContent-Length: 6\r\n\r\nuser=x"
    transport, handler, protocol = drive([PLAIN[0] + post[:20], post[20:]])
    assert len(transport.written) == 1 and protocol.served
    assert handler.received == post
