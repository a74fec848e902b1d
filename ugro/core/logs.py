"""Logging for the CLI: ugro's log file as cluster.yaml's `logging` section says, the terminal at
the level -v asks for.

Library modules only call logging.getLogger(__name__); handlers are attached here, once.
"""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

from ugro.core.cluster import Cluster

# The seed's logs/: everything in agent.log (at logging.level), and beside it health verdicts in
# health.log and the jobs' lifecycle in launcher.log (at INFO or above).
TOPIC_LOGS = {
    "health.log": ("ugro.health.verdicts",),
    "launcher.log": ("ugro.launch", "ugro.controller", "ugro.queue.cancel"),
}
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


def attach_cluster_logs(cluster: Cluster) -> None:
    """ugro's log files for this cluster: logging.file (else logs/agent.log), health.log and
    launcher.log, each rolled over at midnight and kept for logging.keep_days."""
    options = cluster.logging
    level = logging.getLevelName(options.level)
    attach_file(cluster.agent_log, fmt=options.format, level=level, keep_days=options.keep_days)
    for name, loggers in TOPIC_LOGS.items():
        attach_file(
            cluster.paths.logs / name,
            loggers=loggers,
            fmt=options.format,
            level=max(level, logging.INFO),
            keep_days=options.keep_days,
        )


def attach_file(
    path: Path,
    *,
    loggers: tuple[str, ...] = ("",),
    fmt: str,
    level: int = logging.DEBUG,
    keep_days: int = 7,
) -> None:
    """Append this run's records to `path`.

    Several ugro processes may write one file (a launch and a `ugro status`, say); each line is
    one write in append mode, so lines never interleave. At midnight the file rolls over to
    `<name>.<date>`; `keep_days` of those are kept (0 keeps them all). One handler serves all
    the `loggers` (the root logger by default), so the file rolls over once.
    """
    key = str(path)
    if key in _attached:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.TimedRotatingFileHandler(
            path, when="midnight", backupCount=keep_days, encoding="utf-8"
        )
    except OSError as exc:
        logging.getLogger(__name__).warning("cannot write the log %s: %s", path, exc)
        return
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(fmt))
    for logger in loggers:
        logging.getLogger(logger).addHandler(handler)
    _attached.add(key)
