"""CSV lists: a header row, and a column named target (or domain, ip, fqdn)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from blockd.core.model import InputError, Target
from blockd.core.names import parse_target
from blockd.formats import ExportEntry, FormatError

COLUMNS = ("target", "domain", "ip", "fqdn")
HEADER = ["reference", "authority", "kind", "target", "match", "action"]


def parse(text: str) -> list[Target]:
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    try:
        header = next(reader)
    except StopIteration:
        raise FormatError(1, "empty file: a header row is required") from None
    except csv.Error as exc:
        raise FormatError(1, f"not CSV ({exc})") from None
    names = [h.strip().lower() for h in header]
    column = next((names.index(c) for c in COLUMNS if c in names), None)
    if column is None:
        raise FormatError(1, f"no target column in header {header!r} "
                             f"(name one of: {', '.join(COLUMNS)})")
    out: dict[Target, None] = {}
    try:
        for row in reader:
            number = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if column >= len(row) or not row[column].strip():
                raise FormatError(number, "empty target cell")
            try:
                out[parse_target(row[column])] = None
            except InputError as exc:
                raise FormatError(number, exc.reason) from None
    except csv.Error as exc:
        raise FormatError(reader.line_num, f"bad CSV ({exc})") from None
    return list(out)


def render(entries: Iterable[ExportEntry], **_: object) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    for e in entries:
        writer.writerow([e.reference, e.authority, e.target.kind.value, e.target.spec,
                         e.target.match.value, e.action.value])
    return buf.getvalue()
