"""`ugro status`: the cluster's last health check, and its running and recent jobs."""

from __future__ import annotations

import json

import click

from ugro.commands.context import Context
from ugro.errors import ExitCode


def status(ctx: Context, *, recent: int = 10, as_json: bool = False) -> ExitCode:
    from ugro.jobs import Jobs
    from ugro.state import read_json

    cluster = ctx.cluster()
    state = read_json(cluster.paths.cluster_state)
    records = list(Jobs(cluster).records().values())[:recent]
    # Running jobs are asked about on their nodes; finished ones are as the history says.
    if any(r.active for r in records):
        from ugro.control import refresh

        records = [refresh(cluster, r) for r in records]
    if as_json:
        click.echo(
            json.dumps(
                {"cluster": state or {}, "jobs": [r.__dict__ for r in records]},
                indent=2,
                sort_keys=True,
            )
        )
        return ExitCode.OK
    from ugro.display import cluster_state_table, console, jobs_table

    if state:
        console.print(cluster_state_table(state))
    else:
        click.echo(f"No health check recorded yet for {cluster.name}: run `ugro health`.")
    if records:
        running = [r for r in records if r.active]
        title = f"jobs ({len(running)} running, {len(records)} most recent shown)"
        console.print(jobs_table(records, title=title))
    else:
        click.echo("No jobs yet: `ugro launch --name exp1` starts one.")
    return ExitCode.OK
