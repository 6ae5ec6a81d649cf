"""Daemon logs: one line per event, ``key=value``, with the journal seq in force.

journald and log shippers split ``key=value`` lines without a parser per program, and an
engineer reading a line about a block wants to know which policy was in force. Under
systemd (``JOURNAL_STREAM`` set) the time is left to the journal. No subscriber address is
ever logged.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

LEVELS = ("debug", "info", "warning", "error")

_seq: Callable[[], int | None] = lambda: None  # noqa: E731 - replaced by the daemon


def follow_seq(source: Callable[[], int | None]) -> None:
    """Name the journal seq in force on every line (the daemon's core provides it)."""
    global _seq
    _seq = source


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class KeyValueFormatter(logging.Formatter):
    def __init__(self, with_time: bool) -> None:
        super().__init__()
        self.with_time = with_time

    def format(self, record: logging.LogRecord) -> str:
        try:
            seq = _seq()
        except Exception:  # the index is not loaded yet
            seq = None
        parts = []
        if self.with_time:
            parts.append("time=" + self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"))
        parts.append(f"level={record.levelname.lower()}")
        parts.append(f"logger={record.name}")
        if seq is not None:
            parts.append(f"seq={seq}")
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        parts.append("msg=" + _quote(message))
        return " ".join(parts)


def setup(level: str = "info") -> None:
    """Log ``key=value`` lines to stderr at ``level`` (one of LEVELS)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter(with_time="JOURNAL_STREAM" not in os.environ))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
