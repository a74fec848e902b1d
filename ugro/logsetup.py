"""Logging for the CLI: a DEBUG log file always, the terminal at the level -v asks for.

Library modules only call logging.getLogger(__name__); handlers are attached here, once.
"""

from __future__ import annotations

import logging
from pathlib import Path

FORMAT = "[%(asctime)s] %(name)s - %(levelname)s - %(message)s"
_attached: set[str] = set()


def setup_terminal(verbosity: int) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    handler = logging.StreamHandler()
    handler.setLevel(
        logging.DEBUG if verbosity > 1 else logging.INFO if verbosity else logging.WARNING
    )
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root.addHandler(handler)


def attach_file(
    path: Path, *, logger: str = "", fmt: str = FORMAT, level: int = logging.DEBUG
) -> None:
    """Append this run's records to `path` (the seed's logs/agent.log, logs/health.log)."""
    key = f"{logger}:{path}"
    if key in _attached:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        logging.getLogger(__name__).warning("cannot write the log %s: %s", path, exc)
        return
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(fmt))
    logging.getLogger(logger).addHandler(handler)
    _attached.add(key)
