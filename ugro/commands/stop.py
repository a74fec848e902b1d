"""`ugro stop` and `ugro collect`: end a job on every node; bring its files home."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from ugro.commands.context import Context
from ugro.core.errors import ExitCode
from ugro.launch.job_playbooks import collect as collect_job
from ugro.queue.cancel import stop_job
from ugro.records.history import Jobs


def stop(ctx: Context, *, job: str, extravars: Mapping[str, Any] | None = None) -> ExitCode:
    cluster = ctx.cluster()
    record = Jobs(cluster).find(job)
    report = stop_job(cluster, record, extravars=extravars)
    if record.queued and not report.nodes:
        click.echo(f"Cancelled {report.job_id}: it was queued and had not started.")
        return ExitCode.OK
    if report.collect_error:
        click.echo(f"warning: collecting logs failed: {report.collect_error}", err=True)
    reached = len(report.nodes) - len(report.unreachable)
    if record.active and report.state != "stopped":
        click.echo(f"{report.job_id} had already ended ({report.state}) before the stop.")
    click.echo(
        f"Stopped {report.job_id}: {report.signalled} processes on {reached} nodes; "
        "none of the job's processes is left on them."
    )
    for name in report.unreachable:
        click.echo(
            f"{name} could not be reached: its controller ends what is left there when it "
            "answers again.",
            err=True,
        )
    return ExitCode.OK


def collect(ctx: Context, *, job: str, extravars: Mapping[str, Any] | None = None) -> ExitCode:
    cluster = ctx.cluster()
    jobs = Jobs(cluster)
    record = jobs.find(job)
    result = collect_job(cluster, record.job_id, jobs.nodes(record), extravars=extravars)
    changed = sum(h.changed for h in result.hosts.values())
    click.echo(
        f"Collected {record.job_id} into {jobs.experiment_dir(record.job_id)} "
        f"({changed} transfers)."
    )
    return ExitCode.OK
