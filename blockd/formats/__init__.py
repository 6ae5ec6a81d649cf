"""Blocklist file formats for `blockd import` and `blockd export`.

Each module parses text into canonical targets (all or nothing: the first bad line raises
FormatError naming it) and renders exported entries. Pure: no files, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol

from blockd.core.model import Action, InputError, Target


class FormatError(InputError):
    """One line: ``line N: problem``."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}", message)
        self.line = line


@dataclass(frozen=True, slots=True)
class ExportEntry:
    """One target of one order in force, with the action its policy takes."""

    target: Target
    action: Action
    reference: str
    authority: str


class Format(Protocol):
    def parse(self, text: str) -> list[Target]: ...

    def render(self, entries: Iterable[ExportEntry], **opts: object) -> str: ...


def _formats() -> dict[str, ModuleType]:
    from blockd.formats import csvlist, plainlist, rpz

    return {"list": plainlist, "csv": csvlist, "rpz": rpz}


FORMATS: dict[str, ModuleType] = _formats()
