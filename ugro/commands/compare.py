"""`ugro compare JOB JOB...`: what differs between the jobs' configurations, their results,
and with -o their curves overlaid."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ugro.commands.context import Context
from ugro.commands.plot import checked_target
from ugro.core.errors import ExitCode, UsageError
from ugro.records.history import Jobs
from ugro.results.compare import compare as compare_jobs
from ugro.results.plots import draw, job_curves
from ugro.results.summary import find_jobs


def compare(
    ctx: Context, *, names: list[str], as_json: bool, out: str | None, show_all: bool
) -> ExitCode:
    jobs = Jobs(ctx.cluster())
    records = find_jobs(jobs, names)
    if len(records) < 2:
        raise UsageError(f"compare needs two jobs or more; {', '.join(names)} names one")
    comparison = compare_jobs(jobs, records)
    if out:
        target = checked_target(Path(out).expanduser())
        draw([job_curves(r.job_id, jobs.experiment_dir(r.job_id)) for r in records], target)
        comparison["plot"] = str(target)
    if as_json:
        click.echo(json.dumps(comparison, indent=2, sort_keys=True, default=str))
        return ExitCode.OK
    # rich, only to draw for a person (`--json` and scripts go without it).
    from ugro.display.console import console
    from ugro.display.jobs import compare_table

    console.print(compare_table(comparison, show_all=show_all))
    if out:
        click.echo(f"curves: {out}")
    return ExitCode.OK
