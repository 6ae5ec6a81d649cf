"""Daemon logs as an operator reads them: `key=value` lines with the journal seq in force,
the configured level, and the time left to journald under systemd."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from blockd.cli import main

LINE = re.compile(r'^(time=\S+ )?level=(debug|info|warning|error) logger=[\w.]+ '
                  r'(seq=\d+ )?msg="(?:[^"\\]|\\.)*"$')


def run_daemon(tmp_path: Path, config: str, **env: str) -> list[str]:
    db = tmp_path / "blockd.db"
    assert main(["init", "--db", str(db)]) == 0
    assert main(["order", "add", "FI-1", "--authority", "Court", "--issued", "2024-01-01",
                 "allofmp3.com", "--db", str(db), "--actor", "t"]) == 0
    path = tmp_path / "blockd.toml"
    path.write_text(config)
    environ = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    environ |= {"BLOCKD_CONFIG": str(path), **env}
    proc = subprocess.Popen([sys.executable, "-m", "blockd", "serve", "dns", "--db", str(db),
                             "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environ)
    assert proc.stdout is not None
    assert "listening on" in proc.stdout.readline()
    proc.send_signal(signal.SIGHUP)  # "configuration reloaded" at info
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return err.splitlines()


def test_lines_are_key_value_with_the_seq_in_force(tmp_path: Path) -> None:
    lines = run_daemon(tmp_path, "")
    assert lines and all(LINE.match(line) for line in lines), lines
    reloaded = [line for line in lines if "configuration reloaded" in line]
    assert reloaded and " seq=1 " in reloaded[0] and reloaded[0].startswith("time=")


def test_the_level_is_configurable_and_journald_gets_no_time(tmp_path: Path) -> None:
    lines = run_daemon(tmp_path, '[log]\nlevel = "warning"\n', JOURNAL_STREAM="8:1234")
    assert not any("level=info" in line for line in lines), lines
    assert all(not line.startswith("time=") for line in lines)


def test_verbose_flag_beats_the_configured_level() -> None:
    from blockd.daemon import logs, process

    try:
        process.setup_logging(verbose=True)
        process.setup_logging(level="error")  # what run() does with the configuration
        assert logging.getLogger().level == logging.DEBUG
    finally:
        process._verbose = False
        logs.setup("info")
        logging.getLogger().handlers.clear()
