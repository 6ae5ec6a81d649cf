"""Progress for long work (an import of a million names): a bar on a terminal's stderr,
nothing when stderr is piped or captured, so scripts and logs see only the result."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

import click


class Progress:
    """``with Progress("writing", total) as bar: bar.update(n)``; silent off a terminal."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total = label, total
        self._bar: Any = None

    def __enter__(self) -> Progress:
        if sys.stderr.isatty() and self.total > 0:
            self._bar = click.progressbar(length=self.total, label=self.label,
                                          file=sys.stderr, show_eta=True, width=30)
            self._bar.__enter__()
        return self

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.__exit__(kind, exc, tb)
