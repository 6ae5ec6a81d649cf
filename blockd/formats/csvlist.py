"""CSV lists: a header row, and a column named target (or domain, ip, fqdn).

Spreadsheet exports from courts and rights holders carry extra columns (reason, date,
ticket); only the target column matters, so the others are ignored rather than modelled.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from blockd.core.model import Target
from blockd.formats import ExportEntry, FormatError, quote, target_at

COLUMNS = ("target", "domain", "ip", "fqdn")
"""Accepted names of the target column, in order of preference (case-insensitive)."""
HEADER = ("reference", "authority", "kind", "target", "match", "action")


def parse(text: str) -> list[Target]:
    """Targets of the target column in row order, duplicates dropped.

    Plain ``csv`` module semantics (quoted cells, embedded commas and newlines); a ``#``
    line is just a row. Rows whose cells are all empty (spreadsheets pad with ``,,,``) are
    skipped; an empty or missing target cell in any other row is an error.
    """
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    out: dict[Target, None] = {}
    column: int | None = None
    start = 1
    try:
        for row in reader:
            number, start = start, reader.line_num + 1  # a quoted cell may span lines
            if not any(cell.strip() for cell in row):
                continue
            if column is None:
                column = _target_column(number, row)
                continue
            if column >= len(row) or not row[column].strip():
                raise FormatError(number, f"empty target cell in row {quote(','.join(row))}")
            out.setdefault(target_at(number, row[column]), None)
    except csv.Error as exc:
        raise FormatError(start, f"not valid CSV ({exc})") from None
    if column is None:
        raise FormatError(1, "empty file: a header row naming the target column is required")
    return list(out)


def _target_column(number: int, header: list[str]) -> int:
    names = [h.strip().lower() for h in header]
    for name in COLUMNS:
        if name in names:
            return names.index(name)
    raise FormatError(number, f"no target column in header {quote(','.join(header))} "
                              f"(name one of: {', '.join(COLUMNS)})")


def render(entries: Iterable[ExportEntry], **_: object) -> str:
    """Header ``reference,authority,kind,target,match,action``; one row per entry.

    ``target`` holds the canonical spec, so the file imports back unchanged.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    for e in entries:
        writer.writerow([e.reference, e.authority, e.target.kind.value, e.target.spec,
                         e.target.match.value, e.action.value])
    return buf.getvalue()
