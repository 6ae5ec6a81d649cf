"""Progress for long work (an import or export of a million names, a report, an nft apply
of 100k prefixes): a bar on a terminal's stderr, nothing when stderr is piped or
captured, so scripts and logs see only the result."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

import click

T = TypeVar("T")


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


class Steps:
    """A bar over the named steps of one long command (`report`, `nft apply`): which step
    it is in and how many are done; silent off a terminal, like :class:`Progress`."""

    def __init__(self, label: str, steps: Sequence[str]) -> None:
        self.label, self.steps = label, list(steps)
        self._bar: Any = None

    def __enter__(self) -> Steps:
        if sys.stderr.isatty() and self.steps:
            self._bar = click.progressbar(
                length=len(self.steps), label=self.label, file=sys.stderr, width=30,
                item_show_func=lambda item: item)
            self._bar.__enter__()
        return self

    def step(self, name: str) -> None:
        """``name`` is starting (the bar counts the steps before it as done)."""
        if self._bar is not None:
            done = self.steps.index(name) if name in self.steps else self._bar.pos
            self._bar.update(max(0, done - self._bar.pos), name)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            if kind is None:
                self._bar.update(len(self.steps) - self._bar.pos, "done")
            self._bar.__exit__(kind, exc, tb)


def counted(rows: Iterable[T], update: Callable[[int], None], every: int = 1000
            ) -> Iterator[T]:
    """``rows``, telling ``update`` how many went by, every ``every`` rows."""
    n = 0
    for row in rows:
        yield row
        n += 1
        if n == every:
            update(n)
            n = 0
    if n:
        update(n)
