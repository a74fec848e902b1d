"""Everything ugro draws on a terminal: tables and the live progress of a playbook run.

rich is imported here and only here, and only by commands that draw.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from rich.progress import Progress

    from ugro.config import Cluster
    from ugro.health import HealthSummary
    from ugro.sandbox.layout import Sandbox
    from ugro.sandbox.lifecycle import NodeStatus

console = Console()
err_console = Console(stderr=True)

_STATUS_STYLE = {"healthy": "green", "unhealthy": "red", "unreachable": "red"}


def _spinner() -> Progress:
    """A one-line live display on stderr, silent when stderr is not a terminal."""
    # Imported here: only the commands that follow a run draw progress (a table needs none).
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )


class RunProgress:
    """A spinner with the running task and how many hosts have finished it, on stderr.

    Fed by ugro.runner's event stream; silent when stderr is not a terminal.
    """

    def __init__(self, title: str, hosts: int) -> None:
        self.title = title
        self.hosts = hosts
        self.done: set[str] = set()
        self.task_name = "starting"
        self.progress = _spinner()
        self.task_id = self.progress.add_task(self._text(), total=None)

    def _text(self) -> str:
        return f"{self.title}: {self.task_name} [{len(self.done)}/{self.hosts} hosts]"

    def __enter__(self) -> RunProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_task_start":
            self.task_name = data.get("task") or data.get("name") or "task"
            self.done = set()
        elif kind.startswith("runner_on_") and kind != "runner_on_start" and data.get("host"):
            self.done.add(data["host"])
        self.progress.update(self.task_id, description=self._text())


def health_table(summary: HealthSummary) -> Table:
    table = Table(title=f"{summary.cluster}: health at {summary.checked_at}", title_justify="left")
    for column in ("Node", "Rank", "Status", "GPU", "VRAM free/total", "Torch", "Message"):
        table.add_column(column, overflow="fold")
    for node in summary.nodes:
        report = node.report
        env = report.get("env") or {}
        gpus = report.get("gpus") or []
        gpu = ", ".join(g.get("name", "?") for g in gpus) or ("CPU" if report else "-")
        vram = (
            ", ".join(
                f"{_gib(g.get('vram_free_mb'))}/{_gib(g.get('vram_total_mb'))} GB" for g in gpus
            )
            or "-"
        )
        torch = env.get("torch_version") or "-"
        if env.get("cuda_build"):
            torch += f" (CUDA {env['cuda_build']})"
        style = _STATUS_STYLE.get(node.status, "")
        table.add_row(
            node.name, str(node.rank), f"[{style}]{node.status}[/]", gpu, vram, torch, node.message
        )
    cached = [
        node.name for node in summary.nodes if (node.report.get("env") or {}).get("cached_since")
    ]
    if cached:
        table.caption = (
            f"torch on {len(cached)} node(s): as an earlier import found it, the environment "
            "unchanged since; `ugro health --deep` imports it again"
        )
        table.caption_justify = "left"
    return table


def _gib(megabytes: int | None) -> str:
    return f"{(megabytes or 0) / 1024:.1f}"


def inventory_table(cluster: Cluster) -> Table:
    table = Table(title=f"{cluster.name} ({cluster.describe()})", title_justify="left")
    for column in (
        "Node",
        "Role",
        "Rank",
        "Address",
        "User",
        "Connection",
        "Accelerator",
        "Python",
    ):
        table.add_column(column, overflow="fold")
    for node in cluster.nodes:
        address = node.address if node.connection == "local" else f"{node.address}:{node.port}"
        table.add_row(
            node.name,
            node.role,
            str(node.rank),
            address,
            node.user,
            node.connection,
            node.accelerator,
            node.python,
        )
    return table


def cluster_state_table(state: Mapping[str, Any]) -> Table:
    checked = state.get("checked_at", "?")
    table = Table(
        title=f"{state.get('cluster', '?')}: last health check {checked}", title_justify="left"
    )
    for column in ("Node", "Rank", "Status", "Message"):
        table.add_column(column, overflow="fold")
    nodes = sorted((state.get("nodes") or {}).values(), key=lambda n: n.get("rank", 0))
    for node in nodes:
        style = _STATUS_STYLE.get(node.get("status", ""), "")
        table.add_row(
            node.get("name", "?"),
            str(node.get("rank", "?")),
            f"[{style}]{node.get('status', '?')}[/]",
            node.get("message", ""),
        )
    return table


def sandbox_table(sandbox: Sandbox, rows: Iterable[NodeStatus]) -> Table:
    table = Table(
        title=f"sandbox {sandbox.name}: {sandbox.subnet}, master {sandbox.master_address} "
        f"({sandbox.master_user}, this machine)",
        title_justify="left",
    )
    for column in ("Node", "User", "Address", "Namespace", "sshd", "Faults"):
        table.add_column(column)
    for row in rows:
        style = "green" if row.sshd == "answers" else "red"
        table.add_row(
            row.name, row.user, row.address, row.netns, f"[{style}]{row.sshd}[/]", row.faults
        )
    return table


def _local_time(iso: str) -> str:
    """An ISO timestamp as this machine's local time to the second; as given if it is not one."""
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        return str(iso)


def jobs_table(records: Iterable, *, title: str = "jobs") -> Table:
    table = Table(title=title, title_justify="left")
    # A job id is what `ugro logs`/`results` take: it is never folded, so it can be copied whole.
    # It carries the job's start time too (<name>_YYYYmmdd_HHMMSS), so only the last change
    # has a column of its own.
    table.add_column("Job", no_wrap=True)
    table.add_column("State", no_wrap=True)
    table.add_column("Updated", no_wrap=True)
    table.add_column("Nodes", overflow="fold")
    styles = {
        "succeeded": "green",
        "failed": "red",
        "stopped": "yellow",
        "running": "cyan",
        "launching": "cyan",
    }
    for record in records:
        nodes = ", ".join(record.detail.get("nodes") or [])
        table.add_row(
            record.job_id,
            f"[{styles.get(record.state, '')}]{record.state}[/]",
            _local_time(record.updated_at),
            nodes,
        )
    return table


def results_table(summary: Mapping[str, Any]) -> Table:
    table = Table(title=f"results of {summary['job_id']}", title_justify="left", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")

    def fmt(key: str, value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4f}" if "loss" in key else f"{value:,.1f}"
        if isinstance(value, list):
            return ", ".join(map(str, value)) or "-"
        return str(value)

    rows = [
        ("status", summary["status"]),
        ("duration (s)", summary["duration_s"]),
        ("steps", summary["steps"]),
        ("final loss", summary["final_loss"]),
        ("best loss", summary["best_loss"]),
        ("final eval loss", summary["final_eval_loss"]),
        ("tokens/s", summary["tokens_per_s"]),
        ("checkpoints", summary["checkpoints"]),
        ("artifacts", summary["artifacts"]),
        ("directory", summary["experiment_dir"]),
    ]
    failure = summary.get("detail", {}).get("failure")
    if failure:
        where = f"{failure.get('node')}" + (f" rank {failure['rank']}" if "rank" in failure else "")
        rows.append(("failed on", f"{where} (exit {failure.get('exit_code', '?')})"))
    for key, value in rows:
        table.add_row(key, fmt(key, value))
    return table


class TrainingProgress:
    """Steps and the latest loss of a followed job, on stderr (silent when not a terminal)."""

    def __init__(self, job_id: str, *, verbose: bool = False) -> None:
        self.job_id = job_id
        self.verbose = verbose
        self.progress = _spinner()
        self.task_id = self.progress.add_task(f"{job_id}: starting", total=None)

    def __enter__(self) -> TrainingProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, entry: Mapping[str, Any]) -> None:
        if entry.get("kind") == "train":
            text = f"{self.job_id}: step {entry.get('step')} loss {entry.get('loss', 0):.4f}"
            if entry.get("tokens_per_s"):
                text += f" ({entry['tokens_per_s']:.0f} tokens/s)"
            self.progress.update(self.task_id, description=text)
        if self.verbose:
            err_console.print(entry)
