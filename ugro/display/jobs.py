"""Tables about jobs: recent jobs, a job's results and ranks, a sweep, the queue, a comparison.

Job ids and states are passed as Text, never interpolated into markup (rich reads `[...]` as
markup); every figure is written by `number`, the one format the dashboard shares.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from ugro.display.console import JOB_STYLE, local_time, number

if TYPE_CHECKING:
    from ugro.records.history import JobRecord


def jobs_table(
    records: Iterable[JobRecord], *, title: str = "jobs", lines: Mapping[str, str] | None = None
) -> Table:
    """Recent jobs; `lines`: each job's status line (ugro.records.job_status), else its state."""
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
        state = (lines or {}).get(record.job_id) or (
            record.state + (f" (attempt {record.attempt})" if record.attempt > 1 else "")
        )
        table.add_row(
            record.job_id,
            Text(state, style=JOB_STYLE.get(record.state, "")),
            local_time(record.updated_at),
            nodes,
        )
    return table


def results_table(summary: Mapping[str, Any]) -> Table:
    table = Table(title=f"results of {summary['job_id']}", title_justify="left", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")

    attempt = int(summary.get("attempt") or 1)
    rows = [
        (
            "status",
            summary.get("status_line")
            or summary["status"] + (f" (attempt {attempt})" if attempt > 1 else ""),
        ),
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
        table.add_row(key, number(value, key))
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


def queue_table(summary: Mapping[str, Any]) -> Table:
    """`ugro queue`: running jobs, then the queued ones in order with why each waits."""
    table = Table(
        title="queue" + (" (paused)" if summary.get("paused") else ""), title_justify="left"
    )
    for column in ("#", "Job", "State", "Wants / nodes", "Why it waits"):
        table.add_column(column, overflow="fold")
    for job in summary.get("running") or []:
        state = job["state"]
        if job.get("slurm_job"):  # through Slurm: its job there
            state = f"{state} (Slurm job {job['slurm_job']})"
        nodes = ", ".join(job["nodes"])
        table.add_row("", job["job_id"], Text(state, style="cyan"), nodes, "")
    for job in summary.get("queued") or []:
        state = f"queued in Slurm (job {job['slurm_job']})" if job.get("slurm_job") else "queued"
        table.add_row(str(job["position"]), job["job_id"], state, job["wants"], job["reason"])
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

    for row in rows:
        result = row["result"]
        table.add_row(
            row["job_id"],
            *(str(row["point"].get(k, "-")) for k in keys),
            Text(result["status"], style=JOB_STYLE.get(result["status"], "")),
            number(result.get("steps")),
            number(result.get("final_loss"), "loss"),
            number(result.get("best_loss"), "loss"),
            number(result.get("final_eval_loss"), "loss"),
            number(result.get("tokens_per_s")),
        )
    return table


def compare_table(comparison: Mapping[str, Any], *, show_all: bool = False) -> Table:
    """Jobs as columns: the configuration keys that differ (all with show_all), then results."""
    jobs = list(comparison["jobs"])
    table = Table(title="what differs", title_justify="left")
    table.add_column("", style="bold")
    for job in jobs:
        table.add_column(job, overflow="fold")

    # Values are the jobs' own (settings, scripts, reasons): text, never rich markup.
    for key, values in comparison["differs"].items():
        table.add_row(Text(key), *(Text(number(values.get(job), key)) for job in jobs))
    if show_all:
        for key, value in comparison["same"].items():
            table.add_row(
                Text(key, style="dim"), *(Text(number(value, key), style="dim") for _ in jobs)
            )
    elif not comparison["differs"]:
        table.add_row(Text("(configuration)", style="dim"), *("same" for _ in jobs))
    table.add_section()
    results = comparison["results"]
    for key in next(iter(results.values())):
        table.add_row(Text(key), *(Text(number(results[job].get(key), key)) for job in jobs))
    return table
