"""The configuration file: typed values, and unknown keys refused with section.key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

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
        '[rpz]\nzone = "RPZ.ISP.example"\nmetrics = "127.0.0.1"\n'
        '[dns]\nlisten = ["[::1]:53", "127.0.0.1:53"]\nupstream = ["192.0.2.53"]\n'
        'workers = 2\nallow = ["10.0.0.0/8"]\nrate_limit = 50\n'
        '[hits]\nflush_interval = 1.5\n')
    c = load_config(path)
    assert c.policies_dir == tmp_path / "pol"
    assert c.rpz_zone == "rpz.isp.example."
    assert c.rpz_metrics == ("127.0.0.1", 9256)  # the rpz daemon's default metrics port
    assert c.dns.listen == (("::1", 53), ("127.0.0.1", 53))
    assert c.dns.upstream == (("192.0.2.53", 53),)
    assert (c.dns.workers, c.dns.rate_limit, c.hits_flush_interval) == (2, 50.0, 1.5)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[store]\ndatabase = 'x'\n", "store.database: unknown key"),
        ("[stor]\n", "stor: unknown section (line 1)"),
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


# One bad value for every key of blockd.toml: (section, key, TOML value, problem).
BAD_VALUES = [
    ("store", "db", "3", "must be a string, got 3"),
    ("store", "state_dir", "[]", "must be a path string, got []"),
    ("store", "check_interval", "0", "must be a positive number of seconds, got 0"),
    ("log", "level", "'verbose'", "must be debug, info, warning or error, got 'verbose'"),
    ("policies", "dir", "['p']", "must be a path string, got ['p']"),
    ("notice", "ipv4", "'192.0.2'", "'192.0.2' does not appear to be an IPv4 or IPv6"),
    ("notice", "ipv6", "'192.0.2.1'", "'192.0.2.1' is not an IPv6 address"),
    ("notice", "url", "'gopher://x'", "must be an http(s) URL, got 'gopher://x'"),
    ("notice", "listen", "[]", 'must be a non-empty list of "ADDRESS:PORT" strings, got []'),
    ("notice", "isp_name", "1", "must be a string, got 1"),
    ("notice", "isp_contact", "false", "must be a string, got False"),
    ("notice", "transparency", "'yes'", "must be true or false, got 'yes'"),
    ("notice", "tls_listen", "'host:443'", "'host:443' is not an IP address"),
    ("notice", "tls_cert", "1", "must be a path string, got 1"),
    ("notice", "tls_key", "{}", "must be a path string, got {}"),
    ("rpz", "zone", "'a..b'", "'a..b' has an empty label"),
    ("rpz", "listen", "['primary:53']", "'primary:53' is not an IP address"),
    ("rpz", "notify", "'127.0.0.1'", 'must be a list of "ADDRESS:PORT" strings'),
    ("rpz", "allow_transfer", "['10.0.0.0/33']", "'10.0.0.0/33' does not appear to be an"),
    ("rpz", "tsig_key", "1", "must be a path string, got 1"),
    ("rpz", "metrics", "9256", 'must be "ADDRESS:PORT" or "", got 9256'),
    ("dns", "listen", "['127.0.0.1:65536']", "'127.0.0.1:65536' has a bad port"),
    ("dns", "upstream", "[53]", 'must be a non-empty list of "ADDRESS:PORT" strings'),
    ("dns", "workers", "0", "must be a positive integer, got 0"),
    ("dns", "allow", "['10.0.0.0/33']", "'10.0.0.0/33' does not appear to be an IPv4 or IPv6"),
    ("dns", "rate_limit", "0", "must be a positive number, got 0"),
    ("dns", "rate_burst", "-1.5", "must be a positive number, got -1.5"),
    ("dns", "cache_mb", "1.5", "must be a positive integer, got 1.5"),
    ("dns", "memo_mb", "0", "must be a positive integer, got 0"),
    ("dns", "upstream_timeout", "'1s'", "must be a positive number, got '1s'"),
    ("dns", "tcp_idle_timeout", "0.0", "must be a positive number, got 0.0"),
    ("dns", "stale_for", "-86400", "must be a positive number, got -86400"),
    ("dns", "cache_max_ttl", "0", "must be a positive integer, got 0"),
    ("dns", "cache_max_negative_ttl", "3.5", "must be a positive integer, got 3.5"),
    ("dns", "max_inflight", "-1", "must be a positive integer, got -1"),
    ("dns", "metrics", "'[::1]:x'", "'[::1]:x' has a bad port"),
    ("hits", "flush_interval", "0", "must be a positive number of seconds, got 0"),
    ("nft", "local_output", "1", "must be true or false, got 1"),
    ("notice", "metrics", "9254", 'must be "ADDRESS:PORT" or "", got 9254'),
    ("nft", "metrics", "'localhost:9255'", "'localhost:9255' is not an IP address"),
    ("notice", "resolve_cnames", "'yes'", "must be true or false, got 'yes'"),
    # strict: no coercion from strings or booleans
    ("dns", "workers", "'2'", "must be a positive integer, got '2'"),
    ("dns", "workers", "true", "must be a positive integer, got True"),
    ("dns", "rate_limit", "true", "must be a positive number, got True"),
    ("nft", "local_output", "'true'", "must be true or false, got 'true'"),
    ("dns", "listen", "'127.0.0.1:53'", "must be a non-empty list"),
]
SECTIONS = sorted({section for section, *_ in BAD_VALUES})


def load_error(path: Path, body: str) -> str:
    path.write_text(body)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    message = str(exc.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("section", "key", "value", "problem"), BAD_VALUES)
def test_each_bad_value_is_one_line(tmp_path: Path, section: str, key: str, value: str,
                                    problem: str) -> None:
    path = tmp_path / "blockd.toml"
    message = load_error(path, f"[{section}]\n{key} = {value}\n")
    assert message.startswith(f"{path}: {section}.{key}: {problem}")


def test_every_key_has_a_bad_value_case() -> None:
    """The table above covers the schema: a new key needs a case here."""
    from blockd.config_schema import _ConfigFile

    declared = {(section, field.alias or name)
                for section, table in _ConfigFile.model_fields.items()
                for name, field in table.annotation.model_fields.items()}
    assert declared == {(section, key) for section, key, *_ in BAD_VALUES}


@pytest.mark.parametrize("section", SECTIONS)
def test_unknown_key_in_each_section(tmp_path: Path, section: str) -> None:
    path = tmp_path / "blockd.toml"
    message = load_error(path, f"[{section}]\nbogus = 1\n")
    assert message == f"{path}: {section}.bogus: unknown key (line 2)"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[stor]\n", "stor: unknown section (line 1)"),
        ("[notice.tls]\ncert = 'x'\n", "notice.tls: unknown section"),
        ("db = 'x'\n", "db: unknown key"),
        ("dns = 2\n", "dns: must be a table, got 2"),
    ],
)
def test_file_structure_errors(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "blockd.toml"
    assert load_error(path, body) == f"{path}: {message}"


def test_values_are_converted(tmp_path: Path) -> None:
    path = tmp_path / "blockd.toml"
    path.write_text(
        "[notice]\nipv4 = ''\nlisten = ['[::1]']\ntls_listen = '192.0.2.1'\n"
        "tls_cert = '/etc/c.pem'\ntls_key = 'k.pem'\n"
        "[dns]\nmetrics = '127.0.0.1'\nallow = ['10.1.2.3/8']\nstale_for = 60\n")
    c = load_config(path)
    assert (c.notice_ipv4, c.notice_listen, c.tls_listen) == (None, (("::1", 8080),),
                                                             ("192.0.2.1", 443))
    assert (c.tls_cert, c.tls_key) == (Path("/etc/c.pem"), tmp_path / "k.pem")
    assert (c.dns.metrics, c.dns.allow, c.dns.stale_for) == (("127.0.0.1", 9253),
                                                            ("10.0.0.0/8",), 60.0)
    assert isinstance(c.dns.stale_for, float) and c.source == path
    path.write_text("[dns]\nmetrics = ''\n")
    assert load_config(path).dns.metrics is None
    path.write_text("[notice]\nmetrics = '127.0.0.1'\n[nft]\nmetrics = '[::1]:0'\n")
    c = load_config(path)
    assert (c.notice_metrics, c.nft_metrics, c.dns.metrics) == (
        ("127.0.0.1", 9254), ("::1", 0), None)


KEY = st.from_regex(r"[a-z][a-z0-9_-]{0,20}", fullmatch=True)
VALUE = st.sampled_from(["1", "'x'", "true", "[]", "1.5", "{}"])


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(SECTIONS), KEY, VALUE)
def test_any_unknown_key_is_refused_by_name(tmp_path_factory: pytest.TempPathFactory,
                                            section: str, key: str, value: str) -> None:
    assume((section, key) not in {(s, k) for s, k, *_ in BAD_VALUES})
    path = tmp_path_factory.mktemp("cfg") / "blockd.toml"
    message = load_error(path, f"[{section}]\n{key} = {value}\n")
    assert message.startswith(f"{path}: {section}.{key}: unknown ")


def test_state_dir_is_where_the_daemons_keep_their_snapshots(tmp_path: Path) -> None:
    from blockd.daemon.core import Core

    path = tmp_path / "blockd.toml"
    path.write_text('[store]\ndb = "s.db"\nstate_dir = "snapshots"\n')
    config = load_config(path)
    assert config.state_path() == tmp_path / "snapshots"
    core = Core(config, instance="dns")
    assert core.follower.snapshot == tmp_path / "snapshots" / "dns.snapshot"
    assert Config(db=str(tmp_path / "x.db")).state_path() == tmp_path / "x.db-state"
