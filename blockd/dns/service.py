"""The resolver's logic for one message, independent of the transport that carried it.

``DnsService.handle`` returns bytes (answered at once: blocked names, cache hits, errors),
None (drop), or an awaitable for answers that need an upstream. The fast path never
builds a dnslib object; dnslib parses only the queries :func:`wire.scan` declines (upstream
answers are walked by :func:`wire.layout`), and every exception from either becomes
FORMERR/SERVFAIL rather than a crash (see pitfalls.md).

Who may ask is decided in :mod:`blockd.dns.admission`; the only I/O is the
:class:`Upstreams` it is given, and blocked answers are counted through a
:class:`~blockd.core.ports.HitSink`, so no store is needed.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from dnslib import DNSRecord

from blockd.config import DnsSettings
from blockd.core.enforcement import through_chain
from blockd.core.index import BlockIndex, Match
from blockd.core.ports import HitSink
from blockd.dns import local, wire
from blockd.dns.admission import Acl, RateLimiter
from blockd.dns.answers import BlockedAnswers
from blockd.dns.cache import Cache, Entry, truncated
from blockd.dns.upstream import Upstreams

log = logging.getLogger("blockd.dns")

Reply = bytes | None | Awaitable[bytes | None]
# meta query types answered at once (as Unbound does): zone transfers are refused (not
# an authoritative server), MAILA/MAILB are obsolete, OPT/TSIG/TKEY are not questions
META = {251: wire.REFUSED, 252: wire.REFUSED, 253: wire.NOTIMP, 254: wire.NOTIMP,
        wire.T_OPT: wire.FORMERR, 249: wire.FORMERR, 250: wire.FORMERR}
# what a replay memo entry costs beyond its key and answer bytes (dict slot, tuples,
# bytes headers; measured with tracemalloc: 380 bytes an entry for ~130 bytes of data)
MEMO_ENTRY_OVERHEAD = 250


@dataclass
class DnsStats:
    """What the resolver did, as plain ints: the hot path only increments them and the
    metrics collector reads them at scrape time (``daemon/metrics.py``).

    Every query is counted once, under the one result it got: the result fields (all but
    ``queries``) and the blocked answers add up to ``queries``. A blocked answer is
    counted only per policy, in a one-element list per policy name (``cell``): the replay
    memo keeps the cell of the order's policy beside the answer, so a replayed blocked
    answer costs one ``cell[0] += 1``, as a plain attribute increment would, and no dict
    lookup; ``blocked`` is their sum.
    """

    queries: int = 0
    cache_hits: int = 0
    forwarded: int = 0  # answered from an upstream
    servfail: int = 0  # every upstream failed and nothing stale to serve
    stale: int = 0  # served stale from the cache because every upstream failed
    formerr: int = 0
    notimp: int = 0  # opcodes other than QUERY
    badvers: int = 0  # EDNS versions other than 0
    local: int = 0  # special-use names and private reverse zones (RFC 6761/6303)
    refused: int = 0  # at once: other classes, meta types, RD=0 not in the cache
    refused_acl: int = 0
    ratelimited: int = 0
    dropped: int = 0
    errors: int = 0
    blocked_cells: dict[str, list[int]] = field(default_factory=dict)

    def cell(self, policy: str) -> list[int]:
        """The counter of blocked answers for ``policy`` (created on first use)."""
        found = self.blocked_cells.get(policy)
        if found is None:
            found = self.blocked_cells[policy] = [0]
        return found

    @property
    def blocked_by_policy(self) -> dict[str, int]:
        return {name: cell[0] for name, cell in self.blocked_cells.items()}

    @property
    def blocked(self) -> int:
        return sum(cell[0] for cell in self.blocked_cells.values())

    def results(self) -> dict[str, int]:
        """The partition of ``queries``: result label -> count (the metrics' labels)."""
        return {"blocked": self.blocked, "cache_hit": self.cache_hits,
                "forwarded": self.forwarded, "servfail": self.servfail, "stale": self.stale,
                "formerr": self.formerr, "notimp": self.notimp, "badvers": self.badvers,
                "local": self.local, "refused": self.refused,
                "refused_acl": self.refused_acl,
                "ratelimited": self.ratelimited, "dropped": self.dropped,
                "error": self.errors}


def _header_only(ident: int, query_flags: int, rcode: int) -> bytes:
    return wire.header(ident, wire.response_flags(query_flags, rcode), qd=0)


class DnsService:
    def __init__(
        self, index: Callable[[], BlockIndex], answers: BlockedAnswers, settings: DnsSettings,
        upstreams: Upstreams, hits: HitSink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.index = index
        self.answers = answers
        self.settings = settings
        self.upstreams = upstreams
        self.hits = hits
        self.clock = clock
        self.cache = Cache(settings.cache_mb * 1024 * 1024, settings.stale_for,
                           settings.cache_max_ttl, settings.cache_max_negative_ttl)
        self.acl = Acl(settings.allow)
        self.limiter = RateLimiter(settings.rate_limit, settings.rate_burst, clock)
        self.stats = DnsStats()
        # query bytes after the ID -> (answer after the ID, valid until, and for a blocked
        # answer the hit to count and the counter cell of the order's policy, else None)
        self._memo: dict[bytes, tuple[bytes, float, tuple[str, str] | None,
                                      list[int] | None]] = {}
        self._memo_index: BlockIndex | None = None
        # [dns] memo_mb: three quarters for this memo, the rest for the blocked answers'
        # tails (BlockedAnswers); when full, a memo starts over (cheap, and fair to names
        # that are asked once: no eviction order to keep up on the hot path)
        self._memo_limit = settings.memo_mb * 1024 * 1024 * 3 // 4
        self._memo_bytes = 0
        answers.max_bytes = settings.memo_mb * 1024 * 1024 // 4

    # -- entry point -------------------------------------------------------------

    def handle(self, data: bytes, client: str, tcp: bool = False) -> Reply:
        """Answer one message from ``client``; never raises."""
        self.stats.queries += 1
        try:
            if not tcp:
                fast = self._replay(data, client)
                if fast is not None:
                    return fast
            query = wire.scan(data)
            if query is None:
                return self._slow(data, client, tcp)
            return self._answer(query, client, tcp, data)
        except Exception:  # the last line of defence: log, answer SERVFAIL if we can
            self.stats.errors += 1
            log.exception("error handling a query")  # no subscriber address in logs
            if len(data) >= 12:
                ident, flags = struct.unpack_from("!HH", data)
                if not flags & wire.QR:
                    return _header_only(ident, flags, wire.SERVFAIL)
            return None

    # -- the replay memo ---------------------------------------------------------
    #
    # A UDP answer depends on everything in the query but its ID, on the policy snapshot
    # and (for cache hits) on the current second. So the bytes after the ID map straight
    # to the bytes of the answer after the ID: most queries cost one dict lookup, the ACL
    # and the rate limiter. The memo is dropped whenever the policy changes.

    def forget(self) -> None:
        """Drop memoised answers (after a configuration reload)."""
        self._memo.clear()
        self._memo_bytes = 0

    @property
    def memo_bytes(self) -> int:
        """What the replay memo holds, as counted against ``[dns] memo_mb``."""
        return self._memo_bytes

    def flush(self, name: str | None = None) -> int:
        """`blockd cache flush [NAME]`: forget cached answers (all, or of one name) and
        the replay memo; how many cached answers went."""
        self.forget()
        return self.cache.flush(name)

    def _replay(self, data: bytes, client: str) -> bytes | None:
        policy = self.index()
        if policy is not self._memo_index:
            self.forget()
            self._memo_index = policy
        memo = self._memo.get(data[2:])
        if memo is None:
            return None
        tail, until, hit, cell = memo
        if until and self.clock() >= until:
            return None
        if not self.acl.allowed(client) or not self.limiter.allow(client):
            return None  # the slow path counts and answers (REFUSED or drop)
        if cell is not None:
            cell[0] += 1
            if self.hits is not None and hit is not None:
                self.hits.add(hit[0], hit[1], 1, client)
        else:
            self.stats.cache_hits += 1
        return data[:2] + tail

    def _remember(self, data: bytes | None, reply: bytes, until: float,
                  hit: tuple[str, str] | None, cell: list[int] | None = None) -> bytes:
        if data is not None:
            size = len(data) + len(reply) + MEMO_ENTRY_OVERHEAD
            if self._memo_bytes + size > self._memo_limit:
                self.forget()
            self._memo[data[2:]] = (reply[2:], until, hit, cell)
            self._memo_bytes += size
        return reply

    def _answer(self, q: wire.Query, client: str, tcp: bool, data: bytes | None = None
                ) -> Reply:
        if not self.acl.allowed(client):
            if not tcp and not self.limiter.allow(client):
                self.stats.dropped += 1  # refusals are rate limited too (no reflector)
                return None
            self.stats.refused_acl += 1
            return self._refused_acl(q)
        if not tcp and not self.limiter.allow(client):
            # slip, as BIND's RRL does: an empty truncated answer, no bigger than the
            # query, so a real client (one address behind carrier-grade NAT may be
            # thousands of subscribers) retries over TCP, which is not limited
            self.stats.ratelimited += 1
            return truncated(q, wire.NOERROR)
        if q.edns and q.edns_version > 0:
            return self._badvers(q)
        if q.qclass != wire.C_IN or q.qtype in META:  # at once, never an upstream slot
            return self._plain(q, wire.REFUSED if q.qclass != wire.C_IN
                               else META[q.qtype])
        memo = None if tcp else data
        policy = self.index()
        if q.name:
            match = policy.first_match(q.policy_name)
            if match is not None:
                return self._remember(memo, self._blocked(q, match, tcp, client), 0.0,
                                      (match.order.reference, match.target.spec),
                                      self.stats.cell(match.order.policy))
            zone = local.zone_of(q.name)
            if zone is not None:  # RFC 6761/6303: answered here, never forwarded
                self.stats.local += 1
                return self._remember(memo, self._fit(q, local.answer(q, zone), tcp),
                                      0.0, None)
        key = (q.name, q.qtype, q.qclass, q.do, q.cd)
        now = self.clock()
        entry = self.cache.get(key, now)
        if entry is not None:
            blocked = self._chain_block(policy, entry.chain)
            if blocked is not None:
                return self._blocked(q, blocked, tcp, client)
            self.stats.cache_hits += 1
            reply = self._fit(q, Cache.render(q, entry, now, limit=self._limit(q, tcp)), tcp)
            age = int(now - entry.stored)
            until = min(entry.stored + age + 1, entry.stored + entry.ttl)
            return self._remember(memo, reply, until, None)
        if not q.rd:  # RD=0: the cache only, as Unbound does; never recurse for it
            return self._plain(q, wire.REFUSED)
        return self._forward(q, key, tcp, client)

    # -- forwarding --------------------------------------------------------------

    async def _forward(self, q: wire.Query, key: tuple[str, int, int, bool, bool],
                       tcp: bool, client: str) -> bytes | None:
        try:
            return await self._forwarded(q, key, tcp, client)
        except Exception:  # as in handle(): count, log, SERVFAIL
            self.stats.errors += 1
            log.exception("error forwarding a query for %s", q.name)
            return self._servfail(q)

    async def _forwarded(self, q: wire.Query, key: tuple[str, int, int, bool, bool],
                         tcp: bool, client: str) -> bytes | None:
        try:
            response = await self.upstreams.resolve(q.question, q.do, q.cd)
        except OverflowError:
            response = None
        if response is not None and q.qtype == wire.T_ANY:
            response = wire.first_rrset(response)
        now = self.clock()
        lay = self._layout(response) if response is not None else None
        if lay is None or lay.rcode == wire.SERVFAIL:
            stale = self.cache.get(key, now, stale_ok=True)
            if stale is not None and self._chain_block(self.index(), stale.chain) is None:
                self.stats.stale += 1
                return self._fit(q, Cache.render(q, stale, now, stale=True,
                                                 limit=self._limit(q, tcp)), tcp)
            self.stats.servfail += 1
            return self._fit(q, self._servfail(q), tcp)
        assert response is not None
        blocked = self._chain_block(self.index(), lay.chain)
        if blocked is not None:
            return self._blocked(q, blocked, tcp, client)
        entry = Entry.from_layout(response, lay, now)
        if lay.rcode in (wire.NOERROR, wire.NXDOMAIN) and lay.ttl > 0:
            self.cache.put(key, entry)
        self.stats.forwarded += 1
        return self._fit(q, Cache.render(q, entry, now, limit=self._limit(q, tcp)), tcp)

    @staticmethod
    def _layout(response: bytes) -> wire.Layout | None:
        """One walk over an upstream answer (rcode, cache TTL, CNAME chain, TTL offsets);
        None if malformed."""
        try:
            return wire.layout(response)
        except (ValueError, struct.error):
            return None

    def _chain_block(self, index: BlockIndex, chain: tuple[str, ...]) -> Match | None:
        """The order that blocks a name of ``chain`` through CNAMEs (see through_chain)."""
        if not chain:
            return None
        found = through_chain(index, chain, self.answers.policies)
        return found[1].matches[0] if found is not None else None

    # -- answers -----------------------------------------------------------------

    def _blocked(self, q: wire.Query, match: Match, tcp: bool, client: str) -> bytes:
        self.stats.cell(match.order.policy)[0] += 1
        if self.hits is not None:
            self.hits.add(match.order.reference, match.target.spec, 1, client)
        return self._fit(q, self.answers.tail(q, match).render(q), tcp)

    @staticmethod
    def _limit(q: wire.Query, tcp: bool) -> int | None:
        return None if tcp else q.limit()

    def _fit(self, q: wire.Query, message: bytes, tcp: bool) -> bytes:
        if not tcp and len(message) > q.limit():
            return truncated(q, struct.unpack_from("!H", message, 2)[0] & 0xF)
        return message

    def _opt(self, q: wire.Query, options: bytes = b"", ext_rcode: int = 0) -> tuple[int, bytes]:
        return (1, wire.opt_record(q.do, options, ext_rcode)) if q.edns else (0, b"")

    def _refused_acl(self, q: wire.Query) -> bytes:
        ar, opt = self._opt(q, wire.ede_option(wire.EDE_PROHIBITED, "client not authorised"))
        flags = wire.response_flags(q.flags, wire.REFUSED)
        return wire.header(q.id, flags, ar=ar) + q.question + opt

    def _plain(self, q: wire.Query, rcode: int) -> bytes:
        """The question and an rcode, with an OPT if the query had one (counted as
        ``refused``: answered at once, whatever the rcode)."""
        self.stats.refused += 1
        ar, opt = self._opt(q)
        return wire.header(q.id, wire.response_flags(q.flags, rcode), ar=ar) + q.question + opt

    def _servfail(self, q: wire.Query) -> bytes:
        ar, opt = self._opt(q)
        return wire.header(q.id, wire.response_flags(q.flags, wire.SERVFAIL), ar=ar) \
            + q.question + opt

    def _badvers(self, q: wire.Query) -> bytes:
        self.stats.badvers += 1
        flags = wire.response_flags(q.flags, wire.BADVERS & 0xF)
        return wire.header(q.id, flags, ar=1) + q.question + \
            wire.opt_record(q.do, ext_rcode=wire.BADVERS >> 4)

    # -- the slow path -----------------------------------------------------------

    def _slow(self, data: bytes, client: str, tcp: bool) -> Reply:
        """Queries the scanner declined: parse fully, or answer FORMERR/NOTIMP, or drop."""
        if len(data) < 12:
            self.stats.dropped += 1
            return None
        ident, flags = struct.unpack_from("!HH", data)
        if flags & wire.QR:  # a response sent to us: never answer it (reflection loops)
            self.stats.dropped += 1
            return None
        if not self.acl.allowed(client):
            self.stats.dropped += 1
            return None
        opcode = (flags >> 11) & 0xF
        try:
            record = DNSRecord.parse(data)
            questions = record.questions
        except Exception:
            self.stats.formerr += 1
            return _header_only(ident, flags, wire.FORMERR)
        query = self._query_from(record, ident, flags) if len(questions) == 1 else None
        if opcode != 0:  # NOTIFY, UPDATE, STATUS...: not ours; echo the question if sane
            self.stats.notimp += 1
            if query is None:
                return _header_only(ident, flags, wire.NOTIMP)
            return wire.header(ident, wire.response_flags(flags, wire.NOTIMP) | (opcode << 11)) \
                + query.question
        if record.rr or record.auth:
            query = None
        if query is None:
            self.stats.formerr += 1
            if any(rr.rtype == wire.T_OPT for rr in record.ar):  # RFC 6891 6.1.1
                return wire.header(ident, wire.response_flags(flags, wire.FORMERR), qd=0,
                                   ar=1) + wire.opt_record(False)
            return _header_only(ident, flags, wire.FORMERR)
        return self._answer(query, client, tcp)

    @staticmethod
    def _query_from(record: DNSRecord, ident: int, flags: int) -> wire.Query | None:
        try:
            q = record.questions[0]
            labels: list[bytes] = list(q.qname.label)
            if any(not 0 < len(label) <= 63 for label in labels):
                return None
            qname = b"".join(bytes([len(lb)]) + lb for lb in labels) + b"\x00"
            if len(qname) > 255:
                return None
            question = qname + struct.pack("!HH", q.qtype, q.qclass)
            name, decide_as = wire.names_of(labels)
            opts = [rr for rr in record.ar if rr.rtype == wire.T_OPT]
            if len(opts) > 1:
                return None
            edns = bool(opts)
            udp = opts[0].rclass if edns else 512
            ttl = opts[0].ttl if edns else 0
            return wire.Query(ident, flags, question, name, q.qtype, q.qclass, edns, udp,
                              bool(ttl & wire.DO_BIT), (ttl >> 16) & 0xFF, decide_as)
        except Exception:
            return None
