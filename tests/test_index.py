"""The policy core: decisions, time windows, and incremental == from-scratch builds."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from blockd.core.index import IndexBuilder, compile_index
from blockd.core.journal import (
    ORDER_ADD,
    ORDER_STATUS,
    TARGET_ADD,
    TARGET_REMOVE,
    JournalEntry,
    OrderBook,
    make_entry,
    order_payload,
)
from blockd.core.model import Action, OrderRecord, Status
from blockd.core.names import parse_target

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def order(ref: str, *targets: str, **kw: object) -> OrderRecord:
    return OrderRecord(
        reference=ref, authority="Court", issued_on=date(2025, 12, 1), received_at=T0,
        targets=frozenset(parse_target(t) for t in targets), **kw,  # type: ignore[arg-type]
    )


def refs(policy_decision: object) -> list[tuple[str, str]]:
    return [(m.order.reference, m.target.spec) for m in policy_decision.matches]  # type: ignore[attr-defined]


def test_domain_covers_subdomains_exact_and_wildcard_do_not() -> None:
    p = compile_index([order("A", "allofmp3.com", "=only.org", "*.below.net")], T0)
    assert p.decide("allofmp3.com").blocked
    assert p.decide("www.allofmp3.com").blocked
    assert p.decide("a.b.c.AllOfMP3.com.").blocked
    assert not p.decide("notallofmp3.com").blocked
    assert not p.decide("allofmp3.com.evil.org").blocked
    assert p.decide("only.org").blocked
    assert not p.decide("www.only.org").blocked
    assert not p.decide("below.net").blocked
    assert p.decide("x.below.net").blocked


def test_most_specific_first_and_all_orders_reported() -> None:
    p = compile_index(
        [order("A", "example.com"), order("B", "www.example.com", policy="it")],
        T0, {"it": Action.NXDOMAIN},
    )
    d = p.decide("www.example.com")
    assert refs(d) == [("B", "www.example.com"), ("A", "example.com")]
    assert d.action is Action.NXDOMAIN
    assert refs(p.decide("mail.example.com")) == [("A", "example.com")]
    assert p.decide("mail.example.com").action is Action.NOTICE


def test_idn_subject_is_normalised() -> None:
    p = compile_index([order("A", "bücher.example")], T0)
    assert p.decide("www.BÜCHER.example").blocked
    assert p.decide("www.xn--bcher-kva.example").blocked


def test_addresses_and_prefixes_v4_v6() -> None:
    p = compile_index([order("A", "45.33.32.0/24", "45.33.32.156", "2a01:4f8::/48",
                              "2a01:4f9::1")], T0)
    d = p.decide("45.33.32.156")
    assert [t for _, t in refs(d)] == ["45.33.32.156"]  # one match per order: most specific
    assert refs(p.decide("45.33.32.1")) == [("A", "45.33.32.0/24")]
    assert not p.decide("45.33.33.1").blocked
    assert refs(p.decide("2a01:4f8:0:1::5")) == [("A", "2a01:4f8::/48")]
    assert p.decide("2a01:4f9::1").blocked
    assert not p.decide("2a01:4f9::2").blocked
    assert not p.decide("::45.33.32.156").blocked  # an IPv6 address is never a v4 match


def test_time_window_and_status() -> None:
    p_before = compile_index([order("A", "x.com", effective_from=T0 + timedelta(days=1))], T0)
    assert not p_before.decide("x.com").blocked
    assert p_before.valid_until == T0 + timedelta(days=1)
    until = order("A", "x.com", effective_until=T0 + timedelta(hours=1))
    assert compile_index([until], T0).decide("x.com").blocked
    assert not compile_index([until], T0 + timedelta(hours=1)).decide("x.com").blocked
    assert not compile_index([order("A", "x.com", status=Status.SUSPENDED)], T0).decide(
        "x.com").blocked


def test_builder_advance_expires_without_a_command() -> None:
    b = IndexBuilder(T0)
    b.load(order("A", "x.com", effective_until=T0 + timedelta(minutes=5)))
    old = b.index()
    assert b.advance(T0 + timedelta(minutes=5))
    assert not b.index().decide("x.com").blocked
    assert old.decide("x.com").blocked  # snapshots are immutable


# -- incremental == from scratch ------------------------------------------------------

REFS = ["R1", "R2", "R3"]
TARGETS = ["a.com", "=a.com", "*.a.com", "b.a.com", "c.org", "45.33.32.0/24", "45.33.32.7",
           "2a01:4f8::/48", "2a01:4f8::9"]
PROBES = ["a.com", "b.a.com", "x.b.a.com", "c.org", "d.c.org", "z.net", "45.33.32.7",
          "45.33.32.8", "2a01:4f8::9", "2a01:4f8:1::1"]

op = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(REFS), st.sets(st.sampled_from(TARGETS)),
              st.integers(-3, 3), st.integers(-3, 6)),
    st.tuples(st.just("target+"), st.sampled_from(REFS), st.sets(st.sampled_from(TARGETS),
                                                                  min_size=1)),
    st.tuples(st.just("target-"), st.sampled_from(REFS), st.sets(st.sampled_from(TARGETS),
                                                                  min_size=1)),
    st.tuples(st.just("status"), st.sampled_from(REFS), st.sampled_from(list(Status))),
    st.tuples(st.just("tick"), st.integers(0, 4)),
)


def journal_from(ops: list[tuple[object, ...]]) -> tuple[list[JournalEntry | int], OrderBook]:
    """Turn random operations into valid journal entries (ticks are hours to advance)."""
    book = OrderBook()
    out: list[JournalEntry | int] = []
    prev: JournalEntry | None = None
    for o in ops:
        kind = o[0]
        entry: JournalEntry | None = None
        if kind == "tick":
            out.append(int(o[1]))  # type: ignore[call-overload]
            continue
        ref = str(o[1])
        if kind == "add" and ref not in book.orders:
            start, length = int(o[3]), int(o[4])  # type: ignore[call-overload]
            rec = order(ref, effective_from=T0 + timedelta(hours=start),
                        effective_until=T0 + timedelta(hours=start + length) if length > 0
                        else None)
            targets = sorted(parse_target(t).spec for t in o[2])  # type: ignore[attr-defined]
            entry = make_entry(prev, T0, "t", ORDER_ADD,
                               {"order": order_payload(rec), "targets": targets})
        elif kind in ("target+", "target-") and ref in book.orders:
            have = book.targets[ref]
            specs = sorted(parse_target(t).spec for t in o[2])  # type: ignore[attr-defined]
            if kind == "target-":
                specs = [s for s in specs if s in have]
            if specs:
                entry = make_entry(prev, T0, "t", TARGET_ADD if kind == "target+"
                                   else TARGET_REMOVE, {"reference": ref, "targets": specs})
        elif kind == "status" and ref in book.orders:
            cur, new = book.orders[ref].status, o[2]
            if cur is not Status.LIFTED and cur != new:
                entry = make_entry(prev, T0, "t", ORDER_STATUS,
                                   {"reference": ref, "status": new.value,  # type: ignore[attr-defined]
                                    "reason": "r"})
        if entry is not None:
            book.apply(entry)
            out.append(entry)
            prev = entry
    return out, book


@settings(max_examples=300, deadline=None)
@given(st.lists(op, max_size=25))
def test_incremental_equals_scratch(ops: list[tuple[object, ...]]) -> None:
    steps, book = journal_from(ops)
    actions = {"default": Action.NOTICE}
    inc = IndexBuilder(T0, actions)
    at = T0
    for step in steps:
        if isinstance(step, int):
            at += timedelta(hours=step)
            inc.advance(at)
        else:
            inc.apply(step)
    scratch = compile_index(book.records(), at, actions)
    got = inc.index()
    assert got.snapshot() == scratch.snapshot()
    assert got.seq == book.seq
    for probe in PROBES:
        assert refs(got.decide(probe)) == refs(scratch.decide(probe)), probe
    assert got.valid_until == scratch.valid_until


@settings(max_examples=200, deadline=None)
@given(st.lists(op, max_size=25))
def test_first_match_is_the_decisions_primary(ops: list[tuple[object, ...]]) -> None:
    """The resolver's first_match (no Decision built) is decide_name's primary match for
    every name, with several orders, exact, wildcard and subtree targets on one name."""
    _, book = journal_from(ops)
    index = compile_index(book.records(), T0 + timedelta(hours=2), {"default": Action.NOTICE})
    for probe in [*PROBES[:6], "a.com.x", "com", "q.x.b.a.com", "b.a.com.org"]:
        assert index.first_match(probe) == index.decide_name(probe).primary, probe
