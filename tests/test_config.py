"""The configuration file: typed values, and unknown keys refused with section.key."""

from __future__ import annotations

from pathlib import Path

import pytest

from blockd.config import Config, ConfigError, load_config


def test_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BLOCKD_CONFIG", raising=False)
    c = load_config(None) if not Path("/etc/blockd/blockd.toml").exists() else Config()
    assert c.db == "var/blockd.db" and c.dns.listen == (("127.0.0.1", 5353),)
    assert c.dns.allow == ("127.0.0.0/8", "::1/128")


def test_full_file(tmp_path: Path) -> None:
    path = tmp_path / "blockd.toml"
    path.write_text(
        '[store]\ndb = "/var/lib/blockd/b.db"\n[policies]\ndir = "pol"\n'
        '[notice]\nipv4 = "192.0.2.80"\nipv6 = "2001:db8::80"\nurl = "https://isp.example/b"\n'
        '[rpz]\nzone = "RPZ.ISP.example"\n'
        '[dns]\nlisten = ["[::1]:53", "127.0.0.1:53"]\nupstream = ["192.0.2.53"]\n'
        'workers = 2\nallow = ["10.0.0.0/8"]\nrate_limit = 50\n'
        '[hits]\nflush_interval = 1.5\n')
    c = load_config(path)
    assert c.policies_dir == tmp_path / "pol"
    assert c.rpz_zone == "rpz.isp.example."
    assert c.dns.listen == (("::1", 53), ("127.0.0.1", 53))
    assert c.dns.upstream == (("192.0.2.53", 53),)
    assert (c.dns.workers, c.dns.rate_limit, c.hits_flush_interval) == (2, 50.0, 1.5)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[store]\ndatabase = 'x'\n", "store.database: unknown key"),
        ("[stor]\n", "stor: unknown section"),
        ("[notice]\nipv4 = '::1'\n", "not an IPv4 address"),
        ("[notice]\nurl = 'ftp://x'\n", "notice.url"),
        ("[dns]\nlisten = '127.0.0.1:53'\n", "dns.listen: must be a non-empty list"),
        ("[dns]\nlisten = ['127.0.0.1:99999']\n", "bad port"),
        ("[dns]\nworkers = 0\n", "dns.workers: must be a positive integer"),
        ("[dns]\nallow = ['10.0.0.0/33']\n", "dns.allow"),
        ("[dns\n", "blockd.toml"),
    ],
)
def test_errors(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "blockd.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert message in str(exc.value) and str(exc.value).startswith(str(path))
