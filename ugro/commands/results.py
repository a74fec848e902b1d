"""`ugro results`: a job's status, duration, losses, throughput, checkpoints and artifacts; or
a sweep's, one row per point."""

from __future__ import annotations

import json

import click

from ugro.commands.context import Context
from ugro.commands.status import revive
from ugro.core.errors import ExitCode
from ugro.launch.balance import plan_lines
from ugro.records.history import JobRecord, Jobs
from ugro.results.summary import job_results, sweep_records


def results(ctx: Context, *, job: str, as_json: bool = False) -> ExitCode:
    cluster = ctx.cluster()
    jobs = Jobs(cluster)
    swept = sweep_records(jobs, job)
    if swept:
        return sweep_results(ctx, job, swept, as_json=as_json)
    record = jobs.find(job)

    revive(jobs, record)
    summary = job_results(jobs, record)
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))
        return ExitCode.OK
    # rich, only to draw for a person (`--json` and scripts go without it).
    from ugro.display.console import console
    from ugro.display.jobs import ranks_table, results_table

    console.print(results_table(summary))
    per_rank = ranks_table(summary)
    if per_rank is not None:
        console.print(per_rank)

    for line in plan_lines(summary.get("balance") or {}):
        console.print(line, highlight=False, markup=False)
    return ExitCode.OK


def sweep_results(ctx: Context, name: str, records: list[JobRecord], *, as_json: bool) -> ExitCode:
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
    # rich, only to draw for a person (`--json` and scripts go without it).
    from ugro.display.console import console
    from ugro.display.jobs import sweep_table

    console.print(sweep_table(name, rows))
    return ExitCode.OK
