"""The consoles ugro draws on, and the rules every table shares: styles, times, numbers.

rich is imported in this package only, and only by commands that draw. On a terminal, progress
is one line redrawn in place; anywhere else (a pipe, a log file, CI) it is plain lines, one per
event, and tables are as wide as their content, so no path is broken mid-word.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.text import Text

# Off a terminal rich would wrap at 80 columns; a reader of a log file would rather scroll.
_PLAIN_WIDTH = 512

STATUS_STYLE = {"healthy": "green", "unhealthy": "red", "unreachable": "red"}
JOB_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "lost": "red",
    "stopped": "yellow",
    "running": "cyan",
    "launching": "cyan",
    "queued": "blue",
}


def _console(*, stderr: bool = False) -> Console:
    probe = Console(stderr=stderr)
    if probe.is_terminal or os.environ.get("COLUMNS"):
        return probe
    return Console(stderr=stderr, width=_PLAIN_WIDTH)


console = _console()
err_console = _console(stderr=True)


def plain_text(value: str) -> Text:
    """Text that is shown as it is: rich reads `[...]` as markup."""
    return Text(value)


def local_time(iso: str) -> str:
    """An ISO timestamp as this machine's local time to the second; as given if it is not one."""
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        return str(iso)


def number(value: Any, key: str = "") -> str:
    """A figure as every ugro table writes it, and the dashboard too (`fmt` in
    ugro/web/static/app.js, the same rule): a loss to 4 decimals; a whole number with thousands
    separators; a fraction below 1 to 4 significant digits (a learning rate of 0.0002); any
    other with separators and one decimal (12,217.1 tokens/s). "-" for none."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        if isinstance(value, list):
            return ", ".join(map(str, value)) or "-"
        return str(value)
    if "loss" in key:
        return f"{value:.4f}"
    if float(value).is_integer():
        return f"{int(value):,}"
    if abs(value) < 1:
        return f"{value:.4g}"
    return f"{value:,.1f}"
