"""The RPZ primary: `rpz status`."""

from __future__ import annotations

from typing import Any

from blockd.cli.common import App, db_option, emit, json_option, pass_app
from blockd.cli.root import cli
from blockd.core.model import BlockdError


@cli.group()
def rpz() -> None:
    """The RPZ primary's secondaries: what each last fetched."""


def _serial(item: Any) -> str:
    if not isinstance(item, dict):
        return "-"
    return f"{item.get('serial')} at {item.get('at')}"


@rpz.command("status")
@db_option
@json_option
@pass_app
def rpz_status(app: App, db: str | None, as_json: bool) -> None:
    """The zone's serial, and for each secondary the serial it last fetched (IXFR or
    AXFR) and last asked about (SOA), and when; and the NOTIFYs sent. Read from the
    status file `blockd serve rpz` keeps in the state directory."""
    from blockd.daemon.rpz import read_state, state_file

    path = state_file(app.config.with_db(db).state_path())  # beside the store by default
    data = read_state(path)
    if data is None:
        raise BlockdError(f"no RPZ status in {path}: is `blockd serve rpz` running with "
                          "this configuration?")

    def text() -> str:
        lines = [f"zone {data.get('zone')} serial {data.get('serial')} (journal seq "
                 f"{data.get('seq')}), listening on {', '.join(data.get('listen') or [])}; "
                 f"written {data.get('written_at')}"]
        secondaries = data.get("secondaries") or {}
        for host in sorted(secondaries):
            info = secondaries[host]
            transfer = info.get("transfer") or {}
            lines.append(f"  {host}: fetched {_serial(transfer)} ({transfer.get('kind', '-')})"
                         f"; asked {_serial(info.get('soa'))}")
        for target, info in sorted((data.get("notify") or {}).items()):
            state = "acknowledged" if info.get("acked") else "no answer"
            tries = info.get("attempts")
            lines.append(f"  notify {target}: serial {info.get('serial')} {state} at "
                         f"{info.get('at')} ({tries} {'try' if tries == 1 else 'tries'})")
        if len(lines) == 1:
            lines.append("  no secondary has asked yet")
        return "\n".join(lines)

    emit(as_json, data, text)
