"""The overblocking guard with the shipped protected lists."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from blockd.config import default_policies_dir
from blockd.core.guard import Guard, GuardFileError, load_guard
from blockd.core.names import parse_target

GUARD = load_guard(default_policies_dir())


def reasons(text: str) -> list[str]:
    return [r.reason for r in GUARD.check(parse_target(text))]


@pytest.mark.parametrize("text", ["allofmp3.com", "www.allofmp3.com", "*.allofmp3.com",
                                  "=allofmp3.com", "93.184.216.34", "45.33.32.0/24",
                                  "2a01:4f8:1::/48", "xn--bcher-kva.example"])
def test_allowed(text: str) -> None:
    assert reasons(text) == []


def test_refusal_reasons_are_specific() -> None:
    assert reasons("google.com") == [
        "is a protected name (Google (Drive, Docs, Mail, Search))"]
    assert reasons("usercontent.google.com")[0].startswith("is inside protected name google.com")
    assert any(r.startswith("covers protected name") for r in reasons("*.net"))
    assert "covers protected name one.one.one.one" in " ".join(reasons("one.one.one"))
    assert reasons("=one.one.one") == []  # an exact name does not cover names below it
    assert reasons("2a01::/32") == ["is broader than /48"]
    assert reasons("1.1.1.0/24") == [
        "overlaps protected network 1.1.1.1/32 (public resolver: Cloudflare)"]
    assert reasons("104.16.0.0/12") == [
        "is broader than /24", "overlaps protected network 104.16.0.0/13 (CDN: Cloudflare)"]
    assert reasons("100.64.0.1") == ["is not globally routable"]


def test_bad_protected_files(tmp_path: Path) -> None:
    (tmp_path / "protected-names.txt").write_text("ok.example\nbad name.example  # x\n")
    (tmp_path / "protected-networks.txt").write_text("")
    with pytest.raises(GuardFileError, match=r"protected-names.txt:2: "):
        load_guard(tmp_path)
    (tmp_path / "protected-names.txt").write_text("")
    (tmp_path / "protected-networks.txt").write_text("# c\n10.0.0.1/8\n")
    with pytest.raises(GuardFileError, match=r"protected-networks.txt:2: .*host bits"):
        load_guard(tmp_path)


@given(st.ip_addresses(v=4), st.integers(25, 32))
def test_narrow_global_prefixes_outside_protected_ranges_pass(addr: object, plen: int) -> None:
    net = ipaddress.ip_network(f"{addr}/{plen}", strict=False)
    assume(net.network_address.is_global and net.broadcast_address.is_global
           and not net.is_private and not net.is_multicast and not net.is_reserved)
    assume(GUARD.v4.overlap(int(net.network_address), int(net.broadcast_address)) is None)
    assert GUARD.check(parse_target(str(net))) == []


@given(st.ip_addresses(v=4), st.integers(0, 23))
def test_prefixes_broader_than_24_always_refused(addr: object, plen: int) -> None:
    net = ipaddress.ip_network(f"{addr}/{plen}", strict=False)
    assert GUARD.check(parse_target(str(net)))


@given(st.from_regex(r"([a-z0-9]{1,10}\.){1,3}", fullmatch=True),
       st.sampled_from(sorted(GUARD.names)))
def test_anything_under_a_protected_name_is_refused(prefix: str, name: str) -> None:
    assert GUARD.check(parse_target(prefix + name))


def test_overlap_matches_a_linear_scan() -> None:
    nets = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "10.1.0.0/16", "192.0.2.0/24")]
    g = Guard(networks=[(n, "x") for n in nets])
    for probe in ("10.1.2.0/24", "10.200.0.0/24", "192.0.2.128/25", "192.0.3.0/24",
                  "9.255.255.255/32", "11.0.0.0/24"):
        p = ipaddress.ip_network(probe)
        linear = any(p.overlaps(n) for n in nets)
        assert (g.v4.overlap(int(p.network_address), int(p.broadcast_address)) is not None) \
            is linear, probe


@pytest.mark.parametrize(("text", "why"), [
    ("ghs.googlehosted.com", "Google Sites and Blogger custom domains"),
    ("shops.myshopify.com", "Shopify stores"),
    ("cname.vercel-dns.com", "Vercel deployments"),
    ("1.1.1.2", "Cloudflare for Families"),
    ("8.26.56.26", "Comodo Secure DNS"),
    ("2606:4700:4700::1113", "Cloudflare"),  # inside the Cloudflare /32, named first
])
def test_shared_cname_targets_and_more_public_resolvers_are_protected(text: str,
                                                                      why: str) -> None:
    assert any(why in r for r in reasons(text)), reasons(text)


def test_a_shop_on_a_shared_platform_can_still_be_blocked_by_its_own_name() -> None:
    assert reasons("counterfeit-shop.example") == []
    assert reasons("=counterfeit.myshopify.example") == []


def test_high_impact_platforms_warn_but_pass() -> None:
    from blockd.core.names import parse_target as t

    assert reasons("twitter.com") == []  # lawful in some regimes: never refused for it
    assert GUARD.collateral(t("twitter.com")) == [
        "twitter.com: high impact: X (Twitter): hundreds of millions of users, public "
        "authorities"]
    assert GUARD.collateral(t("=mobile.twitter.com"))[0].startswith(
        "=mobile.twitter.com: high impact: X (Twitter)")
    assert GUARD.collateral(t("allofmp3.com")) == []
    assert GUARD.collateral(t("45.33.32.0/24")) == []
