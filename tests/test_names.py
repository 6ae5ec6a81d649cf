"""Target parsing: canonical forms, IDN, addresses, and no surprise exceptions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockd.core.model import DomainMatch, InputError, TargetKind
from blockd.core.names import name_suffixes, parse_target, target_from_spec


@pytest.mark.parametrize(
    ("text", "spec", "kind"),
    [
        ("AllOfMP3.com.", "allofmp3.com", TargetKind.DOMAIN),
        ("=www.Example.com", "=www.example.com", TargetKind.DOMAIN),
        ("*.mirror.example", "*.mirror.example", TargetKind.DOMAIN),
        ("bücher.example", "xn--bcher-kva.example", TargetKind.DOMAIN),
        ("ПРИМЕР.рф", "xn--e1afmkfd.xn--p1ai", TargetKind.DOMAIN),
        ("45.33.32.156", "45.33.32.156", TargetKind.IP),
        ("45.33.32.156/32", "45.33.32.156", TargetKind.IP),
        ("45.33.32.9/24", "45.33.32.0/24", TargetKind.PREFIX),
        ("2A01:4F8:0:0::1", "2a01:4f8::1", TargetKind.IP),
        ("2a01:4f8::/48", "2a01:4f8::/48", TargetKind.PREFIX),
    ],
)
def test_canonical(text: str, spec: str, kind: TargetKind) -> None:
    t = parse_target(text)
    assert (t.spec, t.kind) == (spec, kind)
    assert target_from_spec(t.spec) == t


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("exa mple.com", "not a valid host name"),
        ("http://allofmp3.com/", "URL"),
        ("allofmp3.com/music", "URL"),
        ("1.2.3.400", "not a valid IP address"),
        ("10.0.0.0/33", "not a valid IP prefix"),
        ("2001:db8::/129", "not a valid IP prefix"),
        ("a..b", "empty label"),
        ("x" * 64 + ".com", "longer than 63"),
        (("a" * 60 + ".") * 5 + "com", "longer than 253"),
        ("*.", "empty"),
        ("w*w.example", "wildcard"),
        ("-bad.example", "not a valid host name"),
        ("xn--zz.example", "punycode"),
    ],
)
def test_rejects_with_reason(text: str, problem: str) -> None:
    with pytest.raises(InputError) as exc:
        parse_target(text)
    assert exc.value.field == "target"
    assert problem in str(exc.value)


def test_suffixes() -> None:
    assert name_suffixes("a.b.c") == ["a.b.c", "b.c", "c"]
    assert name_suffixes("c") == ["c"]


@given(st.text(max_size=80))
def test_arbitrary_text_only_ever_raises_input_error(text: str) -> None:
    try:
        t = parse_target(text)
    except InputError:
        return
    assert parse_target(t.spec) == t  # whatever parses is canonical and stable


label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
tld = st.from_regex(r"[a-z]{2,10}", fullmatch=True)


@given(st.lists(label, min_size=1, max_size=4), tld, st.sampled_from(["", "=", "*."]))
def test_valid_names_round_trip(labels: list[str], top: str, prefix: str) -> None:
    name = ".".join([*labels, top])
    t = parse_target(prefix + name.upper() + ".")
    assert t.value == name
    assert target_from_spec(t.spec) == t
    assert t.match is {"": DomainMatch.SUBTREE, "=": DomainMatch.EXACT,
                       "*.": DomainMatch.WILDCARD}[prefix]


@given(st.ip_addresses())
def test_any_address_parses_to_itself(addr: object) -> None:
    t = parse_target(str(addr))
    assert t.kind is TargetKind.IP
    assert t.value == str(addr)
