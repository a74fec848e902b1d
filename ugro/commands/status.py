"""`ugro status`: the cluster's last health check, and its running and recent jobs."""

from __future__ import annotations

import json

import click

from ugro.commands.context import Context
from ugro.errors import ExitCode
from ugro.jobs import JobRecord, Jobs


def controller_notes(jobs: Jobs, running: list[JobRecord]) -> list[str]:
    """What the running jobs' controllers report beyond the state: a stall, silent nodes."""
    from ugro.watcher import Watcher

    notes = []
    for record in running:
        state = Watcher(jobs.experiment_dir(record.job_id)).state()
        if state.get("message"):
            notes.append(f"{record.job_id}: {state['message']}")
        for node, seen in sorted((state.get("nodes") or {}).items()):
            silent = float(seen.get("silent_s") or 0)
            if silent >= 3:
                notes.append(f"{record.job_id}: no heartbeat from {node} for {silent:.0f}s")
    return notes


def revive(jobs: Jobs, record: JobRecord) -> bool:
    """Start the job's controller again if it died while the job still needs one."""
    from ugro.watcher import Watcher

    return Watcher(jobs.experiment_dir(record.job_id)).ensure()


def status(ctx: Context, *, recent: int = 10, as_json: bool = False) -> ExitCode:
    from ugro.state import read_json

    cluster = ctx.cluster()
    state = read_json(cluster.paths.cluster_state)
    jobs = Jobs(cluster)
    records = list(jobs.records().values())[:recent]
    # The jobs' controllers keep the history current: nothing here asks the nodes, so a slow
    # or lost node never holds this up. A controller that died with work left (a running job,
    # a retry to start, leftovers to end) is started again.
    revived = [r.job_id for r in records if revive(jobs, r)]
    for job_id in revived:
        click.echo(f"{job_id}: its controller had stopped; started it again.", err=True)
    if as_json:
        from ugro.commands.health import daemon_health

        fresh = daemon_health(ctx)
        click.echo(
            json.dumps(
                {
                    "cluster": state or {},
                    "daemon": {"age_s": round(fresh[1], 1), **fresh[0]} if fresh else None,
                    "jobs": [r.__dict__ for r in records],
                },
                indent=2,
                sort_keys=True,
            )
        )
        return ExitCode.OK
    from ugro.commands.health import daemon_health
    from ugro.display import cluster_state_table, console, jobs_table, node_samples_table

    fresh = daemon_health(ctx)
    if fresh is not None:
        daemon_state, age = fresh
        console.print(node_samples_table(daemon_state, cluster, age))
        queued = sum(1 for entry in daemon_state.get("queue") or [] if not entry.get("nodes"))
        if queued:
            click.echo(f"{queued} job(s) queued: `ugro queue` says why each waits.")
    elif state:
        console.print(cluster_state_table(state))
    else:
        click.echo(f"No health check recorded yet for {cluster.name}: run `ugro health`.")
    if records:
        running = [r for r in records if r.active]
        title = f"jobs ({len(running)} running, {len(records)} most recent shown)"
        console.print(jobs_table(records, title=title))
        for line in controller_notes(jobs, running):
            click.echo(line)
    else:
        click.echo("No jobs yet: `ugro launch --name exp1` starts one.")
    return ExitCode.OK
