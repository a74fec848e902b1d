"""`ugro results`: a job's status, duration, losses, throughput, checkpoints and artifacts; or
a sweep's, one row per point."""

from __future__ import annotations

import json

import click

from ugro.commands.context import Context
from ugro.errors import ExitCode
from ugro.jobs import JobRecord


def results(ctx: Context, *, job: str, as_json: bool = False) -> ExitCode:
    from ugro.jobresults import job_results, sweep_records
    from ugro.jobs import Jobs

    cluster = ctx.cluster()
    jobs = Jobs(cluster)
    swept = sweep_records(jobs, job)
    if swept:
        return sweep_results(ctx, job, swept, as_json=as_json)
    record = jobs.find(job)
    from ugro.commands.status import revive

    revive(jobs, record)
    summary = job_results(jobs, record)
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))
        return ExitCode.OK
    from ugro.display import console, ranks_table, results_table

    console.print(results_table(summary))
    per_rank = ranks_table(summary)
    if per_rank is not None:
        console.print(per_rank)
    from ugro.balance import plan_lines

    for line in plan_lines(summary.get("balance") or {}):
        console.print(line, highlight=False, markup=False)
    return ExitCode.OK


def sweep_results(ctx: Context, name: str, records: list[JobRecord], *, as_json: bool) -> ExitCode:
    from ugro.jobresults import job_results
    from ugro.jobs import Jobs

    jobs = Jobs(ctx.cluster())
    rows = [
        {
            "job_id": record.job_id,
            "point": (record.detail.get("sweep") or {}).get("point") or {},
            "result": job_results(jobs, record),
        }
        for record in records
    ]
    if as_json:
        click.echo(json.dumps({"sweep": name, "jobs": rows}, indent=2, sort_keys=True, default=str))
        return ExitCode.OK
    from ugro.display import console, sweep_table

    console.print(sweep_table(name, rows))
    return ExitCode.OK
