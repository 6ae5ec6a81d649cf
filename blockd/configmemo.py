"""What a configuration or policy file validated into, remembered by the file's content.

Building blockd's pydantic schemas costs about 0.2 s, two thirds of what a quick command
like `blockd check NAME` may take. A file whose bytes (and path, and blockd's schema code)
are unchanged validates into the same value, so that value is kept in the user's cache
directory (``$XDG_CACHE_HOME/blockd``, else ``~/.cache/blockd``) and read back instead.
A file that fails validation is never remembered: its error comes from the schema each
time. A cache that cannot be written (a hardened unit, a read-only home) is skipped.

The values are pickled, so a memo is read only from a directory and a file owned by
this user that nobody else may write.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import stat
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from blockd.core.model import BlockdError

T = TypeVar("T")
_FORMAT = b"blockd-configmemo-1"
# the code whose classes and rules decide what a file validates into
_CODE = ("config.py", "config_schema.py", "core/enforcement.py", "core/model.py")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "blockd"


@functools.cache
def _stamp() -> bytes:
    """Once a process: every file a command loads is checked against the same code."""
    here = Path(__file__).parent
    parts = [_FORMAT]
    for name in _CODE:
        st = (here / name).stat()
        parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return b"\n".join(parts)


def _private(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _get(path: Path, kind: type[T]) -> T | None:
    try:
        if not _private(path.parent.stat()):
            return None
        with path.open("rb") as f:
            if not _private(os.fstat(f.fileno())):
                return None
            value = pickle.load(f)
    except Exception:  # absent, unreadable, truncated, from another version: validate anew
        return None
    return value if isinstance(value, kind) else None


def _put(path: Path, value: object) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(path.parent.stat()):
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
    except OSError:
        pass  # no cache: the next run validates again


def load(path: Path, kind: type[T], error: type[BlockdError],
         validate: Callable[[dict[str, Any]], T]) -> T:
    """The value ``path`` validates into: remembered, else parsed, validated (errors
    raised as ``error``, one line naming the file) and remembered."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror})") from None
    key = hashlib.sha256(b"\0".join([_stamp(), kind.__qualname__.encode(),
                                     os.fsencode(path.absolute()), content])).hexdigest()
    memo = cache_dir() / f"{key}.pickle"
    found = _get(memo, kind)
    if found is not None:
        return found
    try:
        data = tomllib.loads(content.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: {exc}") from None
    value = validate(data)
    _put(memo, value)
    return value
