"""`ugro submit`, `ugro queue`, `ugro cancel`: jobs that wait for their nodes, run by the daemon."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import click

from ugro.commands.context import Context
from ugro.commands.launch import controller_options, launch_request, submitted_line
from ugro.core.cluster import Cluster
from ugro.core.errors import ExitCode, UsageError
from ugro.core.layout import check_job_ref, check_name
from ugro.launch import start
from ugro.launch.definition import LaunchRequest
from ugro.queue import schedule, sweeps
from ugro.queue import submit as queue_submit
from ugro.queue.cancel import stop_job
from ugro.records.controller_files import ControllerOptions
from ugro.records.daemon_files import DaemonFiles
from ugro.records.history import Jobs
from ugro.views import queue_view


def submit(
    ctx: Context,
    *,
    name: str,
    seed_options: Mapping[str, Any],
    script: str | None,
    script_args: tuple[str, ...],
    nodes: tuple[str, ...],
    node_count: int | None,
    min_vram_gb: float | None,
    allow_drift: bool,
    retries: int | None,
    min_nodes: int | None,
    hang_timeout: float | None,
    sweep: tuple[str, ...],
    balance: str | None = None,
    scheduler: str | None = None,
) -> ExitCode:
    check_name(name)
    if nodes and node_count is not None:
        raise UsageError("give --nodes A,B or --node-count N, not both")
    if min_vram_gb is not None and node_count is None:
        raise UsageError("--min-vram goes with --node-count N (any N nodes with that much)")
    points = sweeps.sweep_points(sweep) if sweep else [{}]
    names = [sweeps.sweep_job_name(name, p) if p else name for p in points]
    for job_name in names:
        check_name(job_name)
    cluster = ctx.cluster()
    for node in nodes:
        cluster.node(node)
    placement = schedule.Placement(nodes=nodes, count=node_count, min_vram_gb=min_vram_gb)
    options = controller_options(
        cluster,
        retries=retries,
        min_nodes=min_nodes,
        hang_timeout=hang_timeout,
        nodes=nodes,
        node_count=node_count,
    )
    job_ids = []
    for index, (point, job_name) in enumerate(zip(points, names, strict=True)):
        request = launch_request(
            cluster,
            name=job_name,
            seed_options=seed_options,
            script=script,
            script_args=(*script_args, *sweeps.sweep_args(point)),
            nodes=nodes,
            allow_drift=allow_drift,
            balance=balance,
            scheduler=scheduler,
        )
        if request.scheduler_on(cluster) == "slurm":
            if min_vram_gb is not None:
                raise UsageError(
                    "--min-vram picks nodes in UGRO's own queue; Slurm picks any --count nodes "
                    "of its partition"
                )
            job_ids.append(_to_slurm(cluster, request, options, node_count))
            continue
        sweep_detail = {"name": name, "point": point, "index": index} if point else None
        job_ids.append(
            queue_submit.submit(cluster, request, options, placement, sweep=sweep_detail)
        )
    if job_ids and request.scheduler_on(cluster) == "slurm":
        return ExitCode.OK
    for job_id in job_ids:
        click.echo(f"{job_id} queued")
    if not DaemonFiles(cluster.paths.data).alive():
        click.echo(
            "No daemon runs for this cluster: nothing starts until `ugro daemon start`.", err=True
        )
    return ExitCode.OK


def _to_slurm(
    cluster: Cluster, request: LaunchRequest, options: ControllerOptions, node_count: int | None
) -> str:
    """With Slurm scheduling the daemon keeps no second queue: the job goes to Slurm's at once,
    for its nodes or any --count Slurm picks (its controller launches it when Slurm allocates
    them) and `ugro queue` shows Slurm's reasons."""
    submitted = start.to_slurm(cluster, request, count=node_count or 0, options=options)
    click.echo(submitted_line(submitted, "Submitted"))
    return submitted.job_id


def queue(ctx: Context, *, as_json: bool, pause: bool, resume: bool) -> ExitCode:
    """The queued and running jobs, each waiting job's position and why it waits."""

    cluster = ctx.cluster()
    files = DaemonFiles(cluster.paths.data)
    if pause or resume:
        files.set_paused(pause)
        click.echo(
            "The queue is paused: running jobs go on, no queued job starts."
            if pause
            else "The queue runs again."
        )
        return ExitCode.OK

    summary = queue_view(cluster)
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
        return ExitCode.OK
    # rich, only to draw for a person (`--json` and scripts go without it).
    from ugro.display.console import console
    from ugro.display.jobs import queue_table

    console.print(queue_table(summary))
    if summary["paused"]:
        click.echo("The queue is paused (`ugro queue --resume`).")
    return ExitCode.OK


def cancel(ctx: Context, *, refs: tuple[str, ...]) -> ExitCode:
    """Remove queued jobs; stop running ones. A sweep's name cancels every job of the sweep."""

    for ref in refs:
        check_job_ref(ref)
    cluster = ctx.cluster()
    jobs = Jobs(cluster)
    records = []
    for ref in refs:
        swept = [
            r for r in jobs.records().values() if (r.detail.get("sweep") or {}).get("name") == ref
        ]
        if swept and ref not in jobs.records() and not any(r.name == ref for r in swept):
            records += [r for r in swept if not r.ended]
            if not any(not r.ended for r in swept):
                click.echo(f"every job of sweep {ref} has already ended")
            continue
        records.append(jobs.find(ref))
    for record in records:
        if record.ended:
            click.echo(f"{record.job_id} had already ended ({record.state})")
            continue
        report = stop_job(cluster, record)
        if record.queued and not report.nodes:
            click.echo(f"{record.job_id} cancelled (it had not started)")
        else:
            click.echo(f"{record.job_id} {report.state}: {report.signalled} processes ended")
    return ExitCode.OK
