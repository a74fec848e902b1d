"""The deployments as a table (`ugro serve status`, and under `ugro status`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table

from ugro.display.console import number, plain_text

STATE_STYLE = {
    "serving": "green",
    "starting": "cyan",
    "restarting": "yellow",
    "stopping": "yellow",
    "lost": "red",
    "failed": "red",
    "stopped": "dim",
}


def uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def deployments_table(rows: Sequence[dict[str, Any]], *, title: str = "deployments") -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("name", "node", "url", "engine", "models", "state", "uptime", "requests"):
        table.add_column(column)
    for column in ("p50 ms", "p99 ms", "tokens/s"):
        table.add_column(column, justify="right")
    for row in rows:
        state = row["state"]
        table.add_row(
            plain_text(row["name"]),
            row["node"],
            plain_text(row["url"]),
            row["engine"],
            plain_text(", ".join(row["models"])),
            f"[{STATE_STYLE.get(state, 'white')}]{state}[/]",
            uptime(row["uptime_s"]),
            number(row["requests"]),
            number(row["latency_p50_ms"]),
            number(row["latency_p99_ms"]),
            number(row["tokens_per_s"]),
        )
    return table
