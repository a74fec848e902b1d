"""`ugro reset` (the guide's reset_cluster): end every UGRO job's processes on every node.

Running jobs are stopped through their controllers first (recorded `stopped`, by the reset);
then every UGRO-tagged process of any job, on every node, is ended and checked gone, which also
takes care of leftovers no job owns any more. A queue with jobs waiting is paused first, so the
daemon does not start the next one on the nodes being cleaned.
"""

from __future__ import annotations

import time

import click

from ugro.commands.context import Context
from ugro.core.errors import ExitCode, UgroError
from ugro.records.controller_files import ControllerHandle
from ugro.records.history import Jobs


def reset(ctx: Context, *, yes: bool = False, nodes: tuple[str, ...] = ()) -> ExitCode:
    cluster = ctx.cluster()
    jobs = Jobs(cluster)
    active = [r for r in jobs.records().values() if r.active]
    targets = list(nodes) or cluster.node_names
    if not yes:
        running = (
            f" ({len(active)} running: {', '.join(r.job_id for r in active)})" if active else ""
        )
        click.confirm(
            f"End every UGRO job's processes on {', '.join(targets)}{running}?", abort=True
        )
    # A queue that ran on would start the next job on the nodes being cleaned.
    from ugro.records.daemon_files import DaemonFiles

    files = DaemonFiles(cluster.paths.data)
    queued = [r for r in jobs.records().values() if r.queued]
    if queued and not files.paused():
        files.set_paused(True)
        click.echo(
            f"The queue is paused ({len(queued)} queued): `ugro queue --resume` lets it run again."
        )
    for record in active:
        controller = ControllerHandle(jobs.experiment_dir(record.job_id))
        if controller.exists():
            controller.request_stop("ugro reset")
            controller.ensure()
    _wait_for_stops(jobs, [r.job_id for r in active])
    for record in active:
        click.echo(f"{record.job_id}: {jobs.find(record.job_id).state}")

    result = ctx.run_playbook("reset", nodes=tuple(targets))
    failed = False
    for name in targets:
        outcome = result.hosts.get(name)
        report = result.facts("ugro_job_state").get(name)
        if report is None:
            failed = True
            why = outcome.message if outcome else "not reached"
            click.echo(f"{name}: not reset: {why}", err=True)
            continue
        ended = report.get("jobs") or {}
        summary = ", ".join(f"{job} ({len(pids)})" for job, pids in sorted(ended.items()))
        click.echo(f"{name}: {summary or 'nothing to end'}; none left")
    for record in active:
        if jobs.find(record.job_id).active:
            jobs.record(record.job_id, "stopped", reason="stopped by ugro reset")
    if failed:
        raise UgroError("reset incomplete: the nodes above could not be reached or cleaned")
    return ExitCode.OK


def _wait_for_stops(jobs: Jobs, job_ids: list[str], timeout: float = 60.0) -> None:
    """Give the jobs' controllers the time to stop them and write it down."""
    deadline = time.monotonic() + timeout
    while job_ids and time.monotonic() < deadline:
        job_ids = [j for j in job_ids if jobs.find(j).active]
        time.sleep(0.2)
