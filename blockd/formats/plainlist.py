"""Plain lists: one domain, address or prefix per line, ``#`` comments.

The lowest common denominator regulators publish (Piracy Shield, most national lists), so
the parser accepts exactly what ``blockd order target add`` accepts on the command line,
line by line, and nothing more clever.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from blockd.core.model import Target
from blockd.core.timeparse import iso
from blockd.formats import ExportEntry, lines, target_at


def parse(text: str) -> list[Target]:
    """Targets in file order, duplicates dropped; the first bad line raises FormatError.

    ``#`` starts a comment anywhere on a line (no target can contain ``#``); blank lines,
    a UTF-8 BOM and CRLF line ends are ignored.
    """
    return parse_lines(lines(text))


def parse_lines(source: Iterable[str]) -> list[Target]:
    """:func:`parse` of lines read one at a time (``blockd import`` streams a file)."""
    out: dict[Target, None] = {}
    for number, raw in enumerate(source, 1):
        entry = raw.split("#", 1)[0].strip()
        if entry:
            out.setdefault(target_at(number, entry), None)
    return list(out)


def render(entries: Iterable[ExportEntry], *, generated_at: datetime, **_: object) -> str:
    """One spec per line, sorted and deduplicated, under a ``# blockd export`` header.

    The time is passed in (no clock reads) so an export is reproducible. Orders and
    actions are not in this format; use csv for those.
    """
    specs = sorted({e.target for e in entries})
    head = f"# blockd export {iso(generated_at)}\n"
    return head + "".join(t.spec + "\n" for t in specs)
