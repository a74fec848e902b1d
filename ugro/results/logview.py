"""A job's collected rank logs: merged with a node/rank prefix, or one rank's, as they grow."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

_RANK_LOG = re.compile(r"(?P<node>.+)\.rank(?P<rank>\d+)\.log")


class LogView:
    """New lines of `<node>.rank<R>.log` files since the last call."""

    def __init__(self, directory: Path, *, rank: int | None = None) -> None:
        self.directory = directory
        self.rank = rank
        self.offsets: dict[Path, int] = {}
        self.partial: dict[Path, str] = {}

    def files(self) -> list[tuple[str, int, Path]]:
        found = []
        for path in self.directory.glob("*.rank*.log"):
            match = _RANK_LOG.fullmatch(path.name)
            if match and (self.rank is None or int(match.group("rank")) == self.rank):
                found.append((match.group("node"), int(match.group("rank")), path))
        return sorted(found, key=lambda item: item[1])

    def new_lines(self) -> Iterator[str]:
        files = self.files()
        prefix = self.rank is None
        for node, rank, path in files:
            with open(path, "rb") as handle:
                handle.seek(self.offsets.get(path, 0))
                chunk = handle.read()
                self.offsets[path] = handle.tell()
            text = self.partial.pop(path, "") + chunk.decode("utf-8", "replace")
            lines = text.split("\n")
            if lines[-1]:
                self.partial[path] = lines[-1]  # an unfinished line waits for its end
            for line in lines[:-1]:
                yield f"[{node} r{rank}] {line}" if prefix else line
