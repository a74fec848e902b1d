"""Files that several ugro processes may write at once: atomic replaces and locked appends."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from filelock import FileLock


def _lock(path: Path) -> FileLock:
    # Imported on first write: commands that only read (results, logs) skip filelock's import.
    from filelock import FileLock

    return FileLock(f"{path}.lock", timeout=30)


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace `path` with `data` so that readers see the old file or the new, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=2, sort_keys=True, default=str)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def append_jsonl(
    path: Path, record: dict[str, Any], *, check: Callable[[], str | None] | None = None
) -> str | None:
    """Append one JSON line under a lock, so concurrent writers never interleave.

    `check`, called under the same lock before `record` is written out, may refuse the append
    by returning why (returned here; nothing is written), or complete the record from what it
    read: a read-check-write that no other writer can slip into.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock(path):
        refused = check() if check is not None else None
        if refused:
            return refused
        line = json.dumps(record, sort_keys=True, default=str) + "\n"
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
    return None


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def read_json_dict(path: Path) -> dict[str, Any]:
    """A state file another process rewrites: empty when missing, unreadable or not an object
    (its writer replaces it atomically, so a torn file means a foreign one, not a race)."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# Reading what another process (or release) wrote: a value of the wrong kind is no value.


def json_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def json_float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def json_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


class JsonLines:
    """New records of a JSON-lines file since the last call (a line being written waits). A
    file replaced or cut shorter (a new run's) is read again from its start, and `restarted`
    says so until the next call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.inode: int | None = None
        self.restarted = False

    def new_records(self) -> Iterator[dict[str, Any]]:
        self.restarted = False
        try:
            with open(self.path, "rb") as handle:
                stat = os.fstat(handle.fileno())
                if self.inode is not None and (
                    stat.st_ino != self.inode or stat.st_size < self.offset
                ):
                    self.offset, self.partial, self.restarted = 0, b"", True
                self.inode = stat.st_ino
                handle.seek(self.offset)
                chunk = handle.read()
                self.offset = handle.tell()
        except FileNotFoundError:
            if self.inode is not None:
                self.offset, self.partial, self.inode, self.restarted = 0, b"", None, True
            return
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # not JSON (a foreign line): skipped, never fatal
            if isinstance(record, dict):
                yield record
