"""`blockd guard update`: providers' published address lists become protected networks,
from files the operator downloaded; the guard then refuses prefixes inside them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import Runner

from blockd.config import default_policies_dir

AWS = {"syncToken": "1", "prefixes": [
    {"ip_prefix": "13.32.0.0/15", "region": "GLOBAL", "service": "CLOUDFRONT"},
    {"ip_prefix": "52.84.0.0/15", "region": "GLOBAL", "service": "CLOUDFRONT"}],
    "ipv6_prefixes": [{"ipv6_prefix": "2600:9000::/28", "service": "CLOUDFRONT"}]}
FASTLY = {"addresses": ["23.235.32.0/20"], "ipv6_addresses": ["2a04:4e40::/32"]}


@pytest.fixture
def policies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blockd: Runner) -> Path:
    d = tmp_path / "policies"
    shutil.copytree(default_policies_dir(), d)
    config = tmp_path / "blockd.toml"
    config.write_text(f'[policies]\ndir = "{d}"\n')
    monkeypatch.setenv("BLOCKD_CONFIG", str(config))
    assert blockd("init").code == 0
    return d


def add(blockd: Runner, ref: str, target: str) -> tuple[int, str]:
    r = blockd("order", "add", ref, "--authority", "Court", "--issued", "2025-01-01", target)
    return r.code, r.err.strip()


def test_published_ranges_are_refused_after_an_update(blockd: Runner, policies: Path,
                                                      tmp_path: Path) -> None:
    assert add(blockd, "A-1", "13.32.5.0/24")[0] == 0  # before: nothing protects it
    aws = tmp_path / "ip-ranges.json"
    aws.write_text(json.dumps(AWS))
    r = blockd("guard", "update", str(aws), "--provider", "AWS CloudFront", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["prefixes"] == 3
    code, err = add(blockd, "A-2", "13.32.6.0/24")
    assert code == 2 and err.endswith(
        "13.32.6.0/24: overlaps protected network 13.32.0.0/15 (AWS CloudFront: CLOUDFRONT); "
        "use --force --justification TEXT if the order really says so")
    fastly = tmp_path / "public-ip-list.json"
    fastly.write_text(json.dumps(FASTLY))
    cf = tmp_path / "ips-v4"
    cf.write_text("173.245.48.0/20\n103.21.244.0/22\n")
    assert blockd("guard", "update", str(fastly), "--provider", "Fastly").code == 0
    assert blockd("guard", "update", str(cf), "--provider", "Cloudflare").code == 0
    text = (policies / "protected-providers.txt").read_text()
    assert "13.32.0.0/15  # AWS CloudFront: CLOUDFRONT" in text  # other providers kept
    assert "23.235.32.0/20  # Fastly: Fastly" in text
    assert "## Cloudflare: snapshot of" in text and "sha256" in text
    # a new snapshot of a provider replaces its old one
    aws.write_text(json.dumps({"prefixes": [{"ip_prefix": "52.84.0.0/15",
                                             "service": "CLOUDFRONT"}]}))
    assert blockd("guard", "update", str(aws), "--provider", "AWS CloudFront").code == 0
    text = (policies / "protected-providers.txt").read_text()
    assert "13.32.0.0/15" not in text and "52.84.0.0/15" in text and "23.235.32.0/20" in text
    assert add(blockd, "A-3", "13.32.6.0/24")[0] == 0


@pytest.mark.parametrize(("content", "problem"), [
    ("{not json", "not valid JSON"),
    ('{"something": []}', "no known list of prefixes"),
    ("10.0.0.0/8\nnot-a-prefix\n", ":2: 'not-a-prefix' is not an IP prefix"),
    ("# only a comment\n", "holds no prefixes"),
])
def test_a_bad_list_changes_nothing(blockd: Runner, policies: Path, tmp_path: Path,
                                    content: str, problem: str) -> None:
    good = tmp_path / "good.txt"
    good.write_text("198.51.100.0/24\n")
    assert blockd("guard", "update", str(good), "--provider", "Example CDN").code == 0
    before = (policies / "protected-providers.txt").read_text()
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    r = blockd("guard", "update", str(bad), "--provider", "Example CDN")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and problem in r.err
    assert (policies / "protected-providers.txt").read_text() == before
