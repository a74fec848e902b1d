"""Everything ugro draws: tables, and the live progress of a playbook run or a training job.

rich is imported here and only here, and only by commands that draw. On a terminal, progress
is one line redrawn in place; anywhere else (a pipe, a log file, CI) it is plain lines, one per
event, and tables are as wide as their content, so no path is broken mid-word.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from rich.progress import Progress

    from ugro.cluster import Cluster
    from ugro.health import HealthSummary
    from ugro.jobs import JobRecord
    from ugro.sandbox.layout import Sandbox
    from ugro.sandbox.lifecycle import NodeStatus

# Off a terminal rich would wrap at 80 columns; a reader of a log file would rather scroll.
_PLAIN_WIDTH = 512


def _console(*, stderr: bool = False) -> Console:
    probe = Console(stderr=stderr)
    if probe.is_terminal or os.environ.get("COLUMNS"):
        return probe
    return Console(stderr=stderr, width=_PLAIN_WIDTH)


console = _console()
err_console = _console(stderr=True)


def task_title(data: Mapping[str, Any]) -> str | None:
    """A task's name as a user reads it; None for Ansible's own bookkeeping."""
    name = str(data.get("task") or data.get("name") or "").strip()
    if not name or name.startswith("Validating arguments against arg spec"):
        return None
    if name == "Gathering Facts":
        return "Gather facts"
    # "Launch | Start the job" -> "Start the job": the command already says which part it is.
    return name.split(" | ", 1)[-1]


_STATUS_STYLE = {"healthy": "green", "unhealthy": "red", "unreachable": "red"}
_JOB_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "lost": "red",
    "stopped": "yellow",
    "running": "cyan",
    "launching": "cyan",
    "queued": "blue",
}


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
    """The running task and how many hosts have finished it, on stderr: a spinner on a
    terminal, else one line as each task starts and for each host that fails it.

    Fed by ugro.runner's event stream.
    """

    def __init__(self, title: str, hosts: int) -> None:
        self.title = title
        self.hosts = hosts
        self.done: set[str] = set()
        self.task_name = "starting"
        self.progress = _spinner()
        self.plain = not err_console.is_terminal
        self.task_id = self.progress.add_task(self._text(), total=None)

    def _text(self) -> str:
        return f"{self.title}: {self.task_name} [{len(self.done)}/{self.hosts} hosts]"

    def __enter__(self) -> RunProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_task_start":
            title = task_title(data)
            if title is None:
                return
            self.task_name = title
            self.done = set()
            if self.plain:
                err_console.print(f"{self.title}: {title}", highlight=False, markup=False)
        elif kind.startswith("runner_on_") and kind != "runner_on_start" and data.get("host"):
            self.done.add(data["host"])
            failed = kind in ("runner_on_failed", "runner_on_unreachable")
            if self.plain and failed and not data.get("ignore_errors"):
                what = "unreachable" if kind == "runner_on_unreachable" else "failed"
                err_console.print(
                    f"{self.title}: {data['host']} {what}: {self.task_name}",
                    highlight=False,
                    markup=False,
                )
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
        "Hardware",
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
            _hardware(node.hardware),
            node.python,
        )
    about = [text for text in (cluster.description, cluster.location) if text]
    if about:
        table.caption = " - ".join(about)
        table.caption_justify = "left"
    return table


def _hardware(hardware: Mapping[str, Any]) -> str:
    """cluster.yaml's description of a node's hardware, as a person would say it."""
    parts = []
    if hardware.get("gpu_model"):
        count = hardware.get("gpu_count")
        parts.append(f"{count}x {hardware['gpu_model']}" if count else str(hardware["gpu_model"]))
    if hardware.get("vram_gb") is not None:
        parts.append(f"{hardware['vram_gb']:g} GB VRAM")
    if hardware.get("cpu_cores"):
        parts.append(f"{hardware['cpu_cores']} cores")
    if hardware.get("ram_gb") is not None:
        parts.append(f"{hardware['ram_gb']:g} GB RAM")
    return ", ".join(parts) or "-"


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


def jobs_table(records: Iterable[JobRecord], *, title: str = "jobs") -> Table:
    table = Table(title=title, title_justify="left")
    # A job id is what `ugro logs`/`results` take: it is never folded, so it can be copied whole.
    # It carries the job's start time too (<name>_YYYYmmdd_HHMMSS), so only the last change
    # has a column of its own.
    table.add_column("Job", no_wrap=True)
    table.add_column("State", no_wrap=True)
    table.add_column("Updated", no_wrap=True)
    table.add_column("Nodes", overflow="fold")
    for record in records:
        nodes = ", ".join(record.detail.get("nodes") or [])
        state = record.state + (f" (attempt {record.attempt})" if record.attempt > 1 else "")
        table.add_row(
            record.job_id,
            Text(state, style=_JOB_STYLE.get(record.state, "")),
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

    attempt = int(summary.get("attempt") or 1)
    rows = [
        ("status", summary["status"] + (f" (attempt {attempt})" if attempt > 1 else "")),
        ("duration (s)", summary["duration_s"]),
        ("training time (s)", summary.get("train_s")),
        ("steps", summary["steps"]),
        ("final loss", summary["final_loss"]),
        ("best loss", summary["best_loss"]),
        ("final eval loss", summary["final_eval_loss"]),
        ("tokens/s", summary["tokens_per_s"]),
        ("checkpoints", summary["checkpoints"]),
        ("artifacts", summary["artifacts"]),
        ("node outputs", summary.get("node_outputs") or []),
        ("directory", summary["experiment_dir"]),
    ]
    for slow in summary.get("stragglers") or []:
        rows.append(
            (
                "straggler",
                f"rank {slow['rank']} on {slow['node']}: {slow['own_step_s']:.3f} s of its own per "
                f"step, {slow['ratio']:.2f}x the median rank's {slow['median_s']:.3f} s",
            )
        )
    detail = summary.get("detail", {})
    failure = detail.get("failure")
    if failure:
        where = f"{failure.get('node')}" + (f" rank {failure['rank']}" if "rank" in failure else "")
        cause = failure.get("reason") or (
            f"exit {failure['exit_code']}" if "exit_code" in failure else "?"
        )
        rows.append(("cause", f"{where}: {cause}"))
    elif detail.get("reason") and summary["status"] != "succeeded":
        rows.append(("cause", detail["reason"]))
    for event in detail.get("events", []):
        if event.get("event") == "leftovers_cleaned":
            rows.append(("cleaned up", f"{event.get('node')} when it answered again"))
        elif event.get("event") == "leftovers_unreached":
            rows.append(("left behind", f"{', '.join(event.get('nodes') or [])} never answered"))
        elif event.get("event") == "not_retried":
            rows.append(("not retried", str(event.get("reason"))))
    for key, value in rows:
        table.add_row(key, fmt(key, value))
    return table


def ranks_table(summary: Mapping[str, Any]) -> Table | None:
    """Each rank's mean step: its own work, waiting for data, idle while it waits for its peers
    (under DDP every rank's step lasts as long as the slowest one's; the others spend the
    difference idle in the all-reduce, so a straggler is the rank that waits least), and its
    micro-batch when the batches were balanced."""
    ranks = summary.get("ranks") or []
    if not ranks:
        return None
    slow = {s["rank"] for s in summary.get("stragglers") or []}
    batches = {
        int(r.get("rank", -1)): r.get("micro_batch")
        for r in (summary.get("balance") or {}).get("ranks") or []
        if isinstance(r, dict)
    }
    table = Table(title="ranks (mean per step)", title_justify="left")
    for column in ("rank", "node", "steps", "step s", "own s", "data s", "idle s", "tokens"):
        table.add_column(column, justify="left" if column == "node" else "right")
    table.add_column("peak MB", justify="right")
    if batches:
        table.add_column("batch", justify="right")
    for rank in ranks:
        extra = [str(batches.get(rank["rank"], "?"))] if batches else []
        table.add_row(
            f"{rank['rank']}{' (slow)' if rank['rank'] in slow else ''}",
            str(rank.get("node") or "?"),
            str(rank["steps"]),
            f"{rank['step_time_s']:.3f}",
            f"{rank['own_step_s']:.3f}",
            f"{rank['data_s']:.3f}",
            f"{rank['sync_s']:.3f}",
            f"{rank['tokens']:,}",
            f"{rank['peak_memory_mb']:,.0f}",
            *extra,
        )
    return table


class TrainingProgress:
    """Steps and the latest loss of a followed job, on stderr: one line redrawn on a terminal,
    else a line per metrics record."""

    def __init__(self, job_id: str, *, verbose: bool = False) -> None:
        self.job_id = job_id
        self.verbose = verbose
        self.progress = _spinner()
        self.plain = not err_console.is_terminal
        self.task_id = self.progress.add_task(f"{job_id}: starting", total=None)
        self.line = f"{job_id}: starting"
        self.note = ""
        if self.plain:
            err_console.print(f"{job_id}: started; following it", highlight=False, markup=False)

    def __enter__(self) -> TrainingProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def notice(self, lines: Iterable[str]) -> None:
        """Lines printed once, above the step line (the batches' split, say)."""
        for line in lines:
            err_console.print(f"{line}", highlight=False, markup=False)

    def status(self, state: Mapping[str, Any]) -> None:
        """What the job's controller says (a stall, a retry coming): beside the step line, and
        as a line of its own off a terminal when it changes."""
        note = str(state.get("message") or "")
        phase = str(state.get("phase") or "")
        if phase and phase not in ("watching", "done"):
            note = f"{phase}: {note}" if note else phase
        if note == self.note:
            return
        self.note = note
        if self.plain and note:
            err_console.print(f"{self.job_id}: {note}", highlight=False, markup=False)
        self.progress.update(self.task_id, description=self.line + (f" - {note}" if note else ""))

    def __call__(self, entry: Mapping[str, Any]) -> None:
        if self.verbose:
            err_console.print(entry)
        elif entry.get("kind") == "train":
            text = f"{self.job_id}: step {entry.get('step')} loss {entry.get('loss', 0):.4f}"
            if entry.get("tokens_per_s"):
                text += f" ({entry['tokens_per_s']:.0f} tokens/s)"
            if self.plain:
                err_console.print(text, highlight=False, markup=False)
            self.line = text
            self.progress.update(
                self.task_id, description=text + (f" - {self.note}" if self.note else "")
            )
        elif entry.get("kind") == "eval" and self.plain:
            text = f"{self.job_id}: step {entry.get('step')} eval loss {entry.get('eval_loss')}"
            err_console.print(text, highlight=False, markup=False)


def netcheck_tables(report: Mapping[str, Any]) -> list[Table]:
    """`ugro netcheck`: each node's route, each pair's stream, the all-reduce sweep."""
    nodes = Table(title=f"network of {report.get('cluster')}", title_justify="left")
    for column in ("Node", "Interface", "MTU", "Link Mb/s", "Rendezvous"):
        nodes.add_column(column)
    for name, node in (report.get("nodes") or {}).items():
        nodes.add_row(
            name,
            str(node.get("interface") or "-"),
            str(node.get("mtu") or "-"),
            str(node.get("speed_mbps") or "?"),
            _plain_text(
                "lead" if name == report.get("lead") else str(node.get("rendezvous") or "-")
            ),
        )
    pairs = Table(title="pairs (a stream on a port the kernel picked)", title_justify="left")
    for column in ("Pair", "Connects", "Mb/s", "Connect ms"):
        pairs.add_column(column)
    for pair in report.get("pairs") or []:
        pairs.add_row(
            " - ".join(pair["nodes"]),
            Text("yes", style="green") if pair.get("ok") else Text("NO", style="red"),
            f"{pair['mbps']:,.0f}" if pair.get("mbps") else "-",
            f"{pair['connect_ms']:.1f}" if pair.get("connect_ms") else "-",
        )
    tables = [nodes, pairs]
    sweep = report.get("sweep") or []
    if sweep:
        table = Table(
            title=f"all-reduce ({report.get('backend')}, {len(report.get('nodes') or {})} nodes)",
            title_justify="left",
        )
        for column in ("Size", "Time ms", "algbw GB/s", "busbw GB/s"):
            table.add_column(column, justify="right")
        for row in sweep:
            table.add_row(
                _bytes(int(row["bytes"])),
                f"{row['seconds'] * 1000:.2f}",
                f"{row['algbw_gbps']:.4f}",
                f"{row['busbw_gbps']:.4f}",
            )
        sync = report.get("lora_sync") or {}
        if sync.get("seconds_per_step") is not None:
            table.caption = (
                f"LoRA gradients ({sync['trainable_parameters']:,} parameters, as "
                f"{sync['from_job']} trained): {sync['seconds_per_step']:.3f} s per step to "
                "synchronise"
            )
        elif sync:
            table.caption = (
                f"Each 10 MB of gradients costs {sync['seconds_per_10mb']:.3f} s per step "
                "(a job's LoRA size is known once one has run)"
            )
        table.caption_justify = "left"
        tables.append(table)
    return tables


def _bytes(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:g} {unit}"
        count //= 1024
    return f"{count} GB"


def _plain_text(value: str) -> Text:
    return Text(value)


def queue_table(summary: Mapping[str, Any]) -> Table:
    """`ugro queue`: running jobs, then the queued ones in order with why each waits."""
    table = Table(
        title="queue" + (" (paused)" if summary.get("paused") else ""), title_justify="left"
    )
    for column in ("#", "Job", "State", "Wants / nodes", "Why it waits"):
        table.add_column(column, overflow="fold")
    for job in summary.get("running") or []:
        table.add_row(
            "", job["job_id"], Text(job["state"], style="cyan"), ", ".join(job["nodes"]), ""
        )
    for job in summary.get("queued") or []:
        table.add_row(str(job["position"]), job["job_id"], "queued", job["wants"], job["reason"])
    if not summary.get("running") and not summary.get("queued"):
        table.caption = "Nothing queued or running: `ugro submit --name exp1` queues a job."
        table.caption_justify = "left"
    return table


def sweep_table(name: str, rows: Iterable[Mapping[str, Any]]) -> Table:
    """`ugro results SWEEP`: one row per point, its values and how it went."""
    rows = list(rows)
    keys = list(dict.fromkeys(k for row in rows for k in row["point"]))
    table = Table(title=f"sweep {name}", title_justify="left")
    for column in (
        "Job",
        *keys,
        "Status",
        "Steps",
        "Final loss",
        "Best loss",
        "Eval loss",
        "Tok/s",
    ):
        table.add_column(column, overflow="fold")

    def fmt(value: Any, digits: int = 4) -> str:
        return (
            "-"
            if value is None
            else f"{value:.{digits}f}"
            if isinstance(value, float)
            else str(value)
        )

    for row in rows:
        result = row["result"]
        table.add_row(
            row["job_id"],
            *(str(row["point"].get(k, "-")) for k in keys),
            Text(result["status"], style=_JOB_STYLE.get(result["status"], "")),
            fmt(result.get("steps")),
            fmt(result.get("final_loss")),
            fmt(result.get("best_loss")),
            fmt(result.get("final_eval_loss")),
            fmt(result.get("tokens_per_s"), 1),
        )
    return table


def node_samples_table(state: Mapping[str, Any], cluster: Cluster, age_s: float) -> Table:
    """The daemon's last verdict on each node (`ugro health`/`status` while it runs)."""
    table = Table(
        title=f"{cluster.name}: health from the daemon, {age_s:.0f}s old (`--now` probes)",
        title_justify="left",
    )
    for column in ("Node", "Rank", "Status", "GPU", "Disk free", "Load", "Busy with", "Problems"):
        table.add_column(column, overflow="fold")
    samples = state.get("nodes") or {}
    busy = state.get("busy") or {}
    for node in cluster.nodes:
        sample = samples.get(node.name) or {}
        status = sample.get("status", "not probed")
        style = {"up": "green", "unhealthy": "yellow", "down": "red"}.get(status, "")
        disk = sample.get("disk_free_gb")
        table.add_row(
            node.name,
            str(node.rank),
            f"[{style}]{status}[/]" if style else status,
            ", ".join(sample.get("gpus") or []) or ("CPU" if sample else "-"),
            f"{disk:g} GB" if disk is not None else "-",
            f"{sample['load1']:g}" if sample.get("load1") is not None else "-",
            busy.get(node.name, ""),
            "; ".join(sample.get("problems") or []),
        )
    return table


def health_history_table(changes: Iterable[tuple[Any, str]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("When", "Node", "Probe", "Change"):
        table.add_column(column, overflow="fold")
    for sample, text in changes:
        when = datetime.fromtimestamp(sample.at).astimezone().strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(when, sample.node, sample.kind, text)
    return table


def compare_table(comparison: Mapping[str, Any], *, show_all: bool = False) -> Table:
    """Jobs as columns: the configuration keys that differ (all with show_all), then results."""
    jobs = list(comparison["jobs"])
    table = Table(title="what differs", title_justify="left")
    table.add_column("", style="bold")
    for job in jobs:
        table.add_column(job, overflow="fold")

    def fmt(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4g}"
        if isinstance(value, list):
            return ", ".join(map(str, value)) or "-"
        return str(value)

    # Values are the jobs' own (settings, scripts, reasons): text, never rich markup.
    for key, values in comparison["differs"].items():
        table.add_row(Text(key), *(Text(fmt(values.get(job))) for job in jobs))
    if show_all:
        for key, value in comparison["same"].items():
            table.add_row(Text(key, style="dim"), *(Text(fmt(value), style="dim") for _ in jobs))
    elif not comparison["differs"]:
        table.add_row(Text("(configuration)", style="dim"), *("same" for _ in jobs))
    table.add_section()
    results = comparison["results"]
    for key in next(iter(results.values())):
        table.add_row(Text(key), *(Text(fmt(results[job].get(key))) for job in jobs))
    return table
