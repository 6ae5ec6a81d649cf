"""Plain lists: one domain, address or prefix per line, ``#`` comments."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from blockd.core.model import InputError, Target
from blockd.core.names import parse_target
from blockd.core.timeparse import iso
from blockd.formats import ExportEntry, FormatError


def parse(text: str) -> list[Target]:
    out: dict[Target, None] = {}
    for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), 1):
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            out[parse_target(entry)] = None
        except InputError as exc:
            raise FormatError(number, exc.reason) from None
    return list(out)


def render(entries: Iterable[ExportEntry], *, generated_at: datetime | None = None,
           **_: object) -> str:
    specs = sorted({e.target for e in entries})
    head = f"# blockd export{' ' + (iso(generated_at) or '') if generated_at else ''}\n"
    return head + "".join(t.spec + "\n" for t in specs)
