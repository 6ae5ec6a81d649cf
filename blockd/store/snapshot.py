"""The last good policy on disk: what a daemon enforces, so it can start without the store.

A daemon writes one snapshot file per instance (``dns``, ``dns.2``, ``http``, ``nft``) in
its state directory after it applied a change: the journal head it stands on, the regime
policies it used, and every active order with its targets (in force now or later, so
orders still enter and leave force by the clock while the store is away). If the store
cannot be read or is refused at start, the daemon serves from this file instead of
stopping DNS for every subscriber.

The format is text, one target per line, streamed in both directions (a million targets
never sit in memory twice), and ends with a SHA-256 of everything before it: a torn or
edited file is refused. Written atomically: a temporary file, fsync, rename, fsync of
the directory.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from blockd.core.index import IndexBuilder
from blockd.core.journal import order_from_payload, order_payload
from blockd.core.model import Action, BlockdError, OrderRecord, Status
from blockd.core.names import target_from_spec

MAGIC = "blockd-snapshot 1"
SUFFIX = ".snapshot"


class SnapshotError(BlockdError):
    """No usable snapshot (missing, torn, edited or of another format)."""


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A snapshot's header: whose it is and which journal head it stands on."""

    path: Path
    instance: str
    seq: int
    hash: str | None
    written_at: str
    orders: int
    targets: int
    policies: Mapping[str, Any]

    @property
    def head(self) -> tuple[int, str | None]:
        return self.seq, self.hash


def snapshot_path(state_dir: Path, instance: str) -> Path:
    return state_dir / f"{instance}{SUFFIX}"


def write_snapshot(
    path: Path, *, instance: str, seq: int, head_hash: str | None,
    orders: Iterable[tuple[OrderRecord, Iterable[str]]], policies: Mapping[str, Any],
) -> SnapshotInfo:
    """Write atomically; ``orders`` are (order, target specs) pairs, active ones kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed writer
        if stale != tmp:
            stale.unlink(missing_ok=True)
    digest = hashlib.sha256()
    n_orders = n_targets = 0
    written_at = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        with tmp.open("w", encoding="utf-8", newline="\n") as out:
            def put(text: str) -> None:
                digest.update(text.encode("utf-8"))
                out.write(text)

            header = {"instance": instance, "seq": seq, "hash": head_hash,
                      "written_at": written_at, "policies": policies}
            put(f"{MAGIC}\n{json.dumps(header, sort_keys=True, default=str)}\n")
            for order, specs in orders:
                if order.status is not Status.ACTIVE:
                    continue  # only a journal entry brings it back; the store has it
                n_orders += 1
                put("O\t" + json.dumps(order_payload(order), sort_keys=True) + "\n")
                block = list(specs)
                n_targets += len(block)
                if block:
                    put("\n".join(block) + "\n")
            out.write(f"E\t{n_orders}\t{n_targets}\t{digest.hexdigest()}\n")
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return SnapshotInfo(path, instance, seq, head_hash, written_at, n_orders, n_targets,
                        policies)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_head(path: Path) -> tuple[int, str | None] | None:
    """The journal head a snapshot stands on, from its header alone (cheap: no digest);
    None when there is no snapshot. Loading it checks the digest."""
    try:
        with path.open(encoding="utf-8", newline="\n") as handle:
            if handle.readline() != MAGIC + "\n":
                raise SnapshotError(f"snapshot {path}: not a blockd snapshot")
            header = json.loads(handle.readline())
            return int(header["seq"]), header["hash"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SnapshotError(f"snapshot {path}: unreadable ({exc})") from None


def load_snapshot(
    path: Path, at: datetime, actions: Mapping[str, Action],
) -> tuple[IndexBuilder, SnapshotInfo]:
    """A builder holding the snapshot's orders at instant ``at``, streamed from the file.
    Nothing is returned from a file whose digest does not match (the builder is only
    handed out at the end)."""
    builder = IndexBuilder(at, actions)
    info: SnapshotInfo | None = None
    for item in _records(path):
        if isinstance(item, SnapshotInfo):
            info = item
        elif not isinstance(item, dict):
            order, specs = item
            builder.load_rows(order, (_parts(s) for s in specs))
    assert info is not None
    builder.book.seq = info.seq
    return builder, info


def read_info(path: Path) -> SnapshotInfo:
    """The header and totals, after checking the whole file's digest."""
    info: SnapshotInfo | None = None
    for item in _records(path):
        if isinstance(item, SnapshotInfo):
            info = item
        elif not isinstance(item, dict):
            for _ in item[1]:
                pass
    assert info is not None
    return info


def _parts(spec: str) -> tuple[str, str, str]:
    if spec.startswith("="):
        return "domain", spec[1:], "exact"
    if spec.startswith("*."):
        return "domain", spec[2:], "wildcard"
    if spec[:1].isdigit() or ":" in spec:
        t = target_from_spec(spec)
        return t.kind.value, t.value, t.match.value
    return "domain", spec, "subtree"


def _check_digest(path: Path) -> tuple[int, int]:
    """Hash everything before the end line (in blocks: fast) and compare it with the
    digest the end line carries; (orders, targets) the end line announces."""
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - 256))
            tail = fh.read()
            cut = tail.rfind(b"\nE\t")
            if not tail.endswith(b"\n") or cut < 0:
                raise SnapshotError(f"snapshot {path}: truncated (no end line)")
            end = size - len(tail) + cut + 1
            _, orders, targets, hexdigest = tail[cut + 1:].decode().rstrip("\n").split("\t")
            digest = hashlib.sha256()
            fh.seek(0)
            left = end
            while left:
                block = fh.read(min(left, 1 << 20))
                if not block:
                    break
                digest.update(block)
                left -= len(block)
    except FileNotFoundError:
        raise SnapshotError(f"no snapshot at {path}") from None
    except OSError as exc:
        raise SnapshotError(f"snapshot {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise SnapshotError(f"snapshot {path}: damaged ({exc})") from None
    if digest.hexdigest() != hexdigest:
        raise SnapshotError(f"snapshot {path}: damaged (digest does not match)")
    return int(orders), int(targets)


def _records(
    path: Path,
) -> Iterator[dict[str, Any] | SnapshotInfo | tuple[OrderRecord, Iterator[str]]]:
    """Check the digest, then stream the file: its header (dict), each (order, specs
    iterator: consume it before the next item), then a SnapshotInfo. Raises
    SnapshotError."""
    announced = _check_digest(path)
    counts = [0, 0]  # orders, targets
    try:
        with path.open(encoding="utf-8", newline="\n") as handle:
            if handle.readline() != MAGIC + "\n":
                raise SnapshotError("not a blockd snapshot")
            header = json.loads(handle.readline())
            yield header
            lines = iter(handle)
            pending: list[str] = []

            def specs() -> Iterator[str]:
                for line in lines:
                    if line.startswith(("O\t", "E\t")):
                        pending.append(line)
                        return
                    counts[1] += 1
                    yield line[:-1]

            line = next(lines, "")
            while line.startswith("O\t"):
                counts[0] += 1
                rows = specs()
                yield order_from_payload(json.loads(line[2:])), rows
                for _ in rows:  # whatever the consumer left
                    pass
                line = pending.pop() if pending else ""
            if not line.startswith("E\t"):
                raise SnapshotError("a line out of place")
    except SnapshotError as exc:
        raise SnapshotError(f"snapshot {path}: {exc}") from None
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"snapshot {path}: damaged ({exc})") from None
    if tuple(counts) != announced:
        raise SnapshotError(f"snapshot {path}: damaged (counts do not match)")
    yield SnapshotInfo(path, str(header["instance"]), int(header["seq"]), header["hash"],
                       str(header["written_at"]), counts[0], counts[1],
                       header.get("policies") or {})


def snapshots(state_dir: Path) -> list[SnapshotInfo | SnapshotError]:
    """Every snapshot in ``state_dir`` (``blockd status``, ``blockd store adopt``)."""
    if not state_dir.is_dir():
        return []
    out: list[SnapshotInfo | SnapshotError] = []
    for path in sorted(state_dir.glob(f"*{SUFFIX}")):
        try:
            out.append(read_info(path))
        except SnapshotError as exc:
            out.append(exc)
    return out
