"""`ugro results`: a job's status, duration, losses, throughput, checkpoints and artifacts."""

from __future__ import annotations

import json

import click

from ugro.commands.context import Context
from ugro.errors import ExitCode


def results(ctx: Context, *, job: str, as_json: bool = False) -> ExitCode:
    from ugro.jobs import Jobs, job_results

    cluster = ctx.cluster()
    jobs = Jobs(cluster)
    record = jobs.find(job)
    from ugro.commands.status import revive

    revive(jobs, record)
    summary = job_results(jobs, record)
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))
        return ExitCode.OK
    from ugro.display import console, results_table

    console.print(results_table(summary))
    return ExitCode.OK
