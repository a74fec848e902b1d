"""`ugro status`: the cluster's last health check, its running and recent jobs, and its
deployments (`ugro serve`)."""

from __future__ import annotations

import json

import click

from ugro.commands.context import Context
from ugro.commands.health import daemon_health
from ugro.core.errors import ExitCode
from ugro.core.files import read_json
from ugro.records.controller_files import ControllerHandle
from ugro.records.deployments import STOPPED, all_deployments
from ugro.records.history import JobRecord, Jobs
from ugro.records.job_status import job_status
from ugro.views import deployments_view


def controller_notes(jobs: Jobs, running: list[JobRecord]) -> list[str]:
    """What the running jobs' controllers report beyond the state: a stall, silent nodes."""

    notes = []
    for record in running:
        state = ControllerHandle(jobs.experiment_dir(record.job_id)).state()
        if state.message:
            notes.append(f"{record.job_id}: {state.message}")
        for node, silent in sorted(state.silent_s.items()):
            if silent >= 3:
                notes.append(f"{record.job_id}: no heartbeat from {node} for {silent:.0f}s")
    return notes


def revive(jobs: Jobs, record: JobRecord) -> bool:
    """Start the job's controller again if it died while the job still needs one."""

    return ControllerHandle(jobs.experiment_dir(record.job_id)).ensure()


def status(ctx: Context, *, recent: int = 10, as_json: bool = False) -> ExitCode:
    cluster = ctx.cluster()
    state = read_json(cluster.paths.cluster_state)
    jobs = Jobs(cluster)
    records = list(jobs.records().values())[:recent]
    # The jobs' controllers keep the history current: nothing here asks the nodes, so a slow
    # or lost node never holds this up. A controller that died with work left (a running job,
    # a retry to start, leftovers to end) is started again.
    revived = [r.job_id for r in records if revive(jobs, r)]
    revived += [f"deployment {d.name}" for d in all_deployments(cluster) if d.ensure()]
    for job_id in revived:
        click.echo(f"{job_id}: its controller had stopped; started it again.", err=True)
    deployments = [d for d in deployments_view(cluster) if d["state"] != STOPPED]
    if as_json:
        fresh = daemon_health(ctx)
        click.echo(
            json.dumps(
                {
                    "cluster": state or {},
                    "daemon": {"age_s": round(fresh[1], 1), **fresh[0].to_json()}
                    if fresh
                    else None,
                    "jobs": [r.__dict__ | job_status(jobs, r).to_json() for r in records],
                    "deployments": deployments,
                },
                indent=2,
                sort_keys=True,
            )
        )
        return ExitCode.OK
    # rich, for a person only: `status --json` answers without it.
    from ugro.display.console import console
    from ugro.display.jobs import jobs_table
    from ugro.display.nodes import cluster_state_table, node_samples_table

    fresh = daemon_health(ctx)
    if fresh is not None:
        daemon_state, age = fresh
        console.print(node_samples_table(daemon_state, cluster, age))
        if daemon_state.waiting:
            click.echo(f"{daemon_state.waiting} job(s) queued: `ugro queue` says why each waits.")
    elif state:
        console.print(cluster_state_table(state))
    else:
        click.echo(f"No health check recorded yet for {cluster.name}: run `ugro health`.")
    if records:
        running = [r for r in records if r.active]
        title = f"jobs ({len(running)} running, {len(records)} most recent shown)"
        lines = {r.job_id: job_status(jobs, r).line for r in records}
        console.print(jobs_table(records, title=title, lines=lines))
        for line in controller_notes(jobs, running):
            click.echo(line)
    else:
        click.echo("No jobs yet: `ugro launch --name exp1` starts one.")
    if deployments:
        from ugro.display.serving import deployments_table  # rich, as above

        console.print(deployments_table(deployments))
    return ExitCode.OK
