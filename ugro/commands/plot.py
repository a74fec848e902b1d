"""`ugro plot JOB...`: the jobs' curves in one PNG."""

from __future__ import annotations

from pathlib import Path

import click

from ugro.commands.context import Context
from ugro.core.errors import ExitCode, UsageError
from ugro.records.history import Jobs
from ugro.results.plots import METRICS, draw, job_curves
from ugro.results.summary import find_jobs

FORMATS = (".png", ".svg", ".pdf")


def checked_target(path: Path) -> Path:
    """Where a drawing may go: a format matplotlib writes, in a directory that exists."""
    if path.suffix.lower() not in FORMATS:
        raise UsageError(f"{path}: expected a .png, .svg or .pdf file name")
    if not path.parent.is_dir():
        raise UsageError(f"{path}: no directory {path.parent}")
    return path


def plot(ctx: Context, *, names: list[str], out: str | None, metrics: list[str]) -> ExitCode:
    jobs = Jobs(ctx.cluster())
    records = find_jobs(jobs, names)
    curves = [job_curves(r.job_id, jobs.experiment_dir(r.job_id)) for r in records]
    # One job: beside its results; several: here, where the user asked for them.
    default = jobs.experiment_dir(records[0].job_id) / "plot.png" if len(records) == 1 else None
    target = Path(out).expanduser() if out else default or Path("plot.png")
    drawn = draw(curves, checked_target(target), metrics or METRICS)
    click.echo(f"{target}  ({', '.join(drawn)})")
    return ExitCode.OK
