"""Blocklist file formats for `blockd import` and `blockd export`.

Each module parses text into canonical targets (all or nothing: the first bad line raises
FormatError naming it, so a half-read file never reaches the store) and renders exported
entries. Pure functions over ``str``: no files, no clock, no database.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

from blockd.core.model import Action, InputError, Target
from blockd.core.names import parse_target

BREAKS = re.compile(r"\r\n|\r|\n")  # line ends, as an editor counts them
_QUOTE_MAX = 80


class FormatError(InputError):
    """The first bad line of an imported file: ``line N: problem`` on one line.

    ``field`` is ``line N`` so the CLI can prefix the file name like any other InputError.
    """

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}", " ".join(message.splitlines()).strip() or "bad line")
        self.line = line


@dataclass(frozen=True, slots=True)
class ExportEntry:
    """One target of one order in force, with the action its policy takes."""

    target: Target
    action: Action
    reference: str
    authority: str


def lines(text: str) -> Iterator[str]:
    """Physical lines, numbered as an editor shows them (BOM dropped, CRLF/CR/LF breaks),
    one at a time: a list of a million lines would cost more than the targets parsed.

    Not ``str.splitlines``: that also breaks on form feeds and U+2028, so its line numbers
    would disagree with the user's editor.
    """
    start = 1 if text.startswith("\ufeff") else 0
    for found in BREAKS.finditer(text, start):
        yield text[start:found.start()]
        start = found.end()
    yield text[start:]


def quote(text: str) -> str:
    """``repr`` of offending text for an error message, cut short so it stays one line."""
    if len(text) > _QUOTE_MAX:
        return repr(text[:_QUOTE_MAX]) + "..."
    return repr(text)


def target_at(number: int, text: str) -> Target:
    """``parse_target`` with its errors turned into FormatError for line ``number``.

    ValueError/UnicodeError are caught too: names.py is the single normaliser and is owned
    elsewhere, and a stray codec error must never escape an importer as a traceback.
    """
    try:
        return parse_target(text)
    except InputError as exc:
        reason = exc.reason
    except (ValueError, UnicodeError) as exc:
        reason = f"not a valid target ({type(exc).__name__})"
    core = text.strip().removeprefix("=").removeprefix("*.")
    if not core or core not in reason:
        reason = f"{quote(text.strip())}: {reason}"
    raise FormatError(number, reason)


def _formats() -> dict[str, ModuleType]:
    # imported here, after the shared types, because each module imports them from us
    from blockd.formats import csvlist, plainlist, rpz

    return {"list": plainlist, "csv": csvlist, "rpz": rpz}


FORMATS: dict[str, ModuleType] = _formats()
"""``--format`` name -> module with ``parse(text)`` and ``render(entries, **opts)``."""
