"""`ugro compare JOB JOB...`: what differs between the jobs' configurations, their results,
and with -o their curves overlaid."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ugro.commands.context import Context
from ugro.errors import ExitCode, UsageError


def compare(
    ctx: Context, *, names: list[str], as_json: bool, out: str | None, show_all: bool
) -> ExitCode:
    from ugro.compare import compare as compare_jobs
    from ugro.jobresults import find_jobs
    from ugro.jobs import Jobs

    jobs = Jobs(ctx.cluster())
    records = find_jobs(jobs, names)
    if len(records) < 2:
        raise UsageError(f"compare needs two jobs or more; {', '.join(names)} names one")
    comparison = compare_jobs(jobs, records)
    if out:
        from ugro.commands.plot import checked_target
        from ugro.plots import draw, job_curves

        target = checked_target(Path(out).expanduser())
        draw([job_curves(r.job_id, jobs.experiment_dir(r.job_id)) for r in records], target)
        comparison["plot"] = str(target)
    if as_json:
        click.echo(json.dumps(comparison, indent=2, sort_keys=True, default=str))
        return ExitCode.OK
    from ugro.display import compare_table, console

    console.print(compare_table(comparison, show_all=show_all))
    if out:
        click.echo(f"curves: {out}")
    return ExitCode.OK
