"""`ugro logs`: a job's per-rank logs, merged with node and rank prefixes, or one rank's."""

from __future__ import annotations

import click

from ugro.commands.context import Context
from ugro.errors import ExitCode, UsageError

# How often `logs --follow` asks the nodes (one status run, which brings their logs too).
FOLLOW_CHECK_S = 10.0


def logs(ctx: Context, *, job: str, rank: int | None = None, follow_: bool = False) -> ExitCode:
    from ugro.jobs import Jobs
    from ugro.logview import LogView

    cluster = ctx.cluster()
    jobs = Jobs(cluster)
    record = jobs.find(job)
    directory = jobs.experiment_dir(record.job_id) / "logs"
    if follow_ and record.active:
        from ugro.follow import follow

        view = LogView(directory, rank=rank)

        def show() -> None:
            for line in view.new_lines():
                click.echo(line)

        record = follow(
            cluster,
            record.job_id,
            on_poll=show,
            collect_logs=True,
            check_every=FOLLOW_CHECK_S,
            check_first=True,
        )
        click.echo(f"[{record.job_id} {record.state}]", err=True)
        return ExitCode.OK
    if record.active:
        # One status run brings the other nodes' logs as they are now (and notices an end).
        from ugro.control import refresh

        record = refresh(cluster, record, collect_logs=True)
    view = LogView(directory, rank=rank)
    if not view.files():
        which = f" for rank {rank}" if rank is not None else ""
        raise UsageError(f"no logs{which} in {directory}")
    for line in view.new_lines():
        click.echo(line)
    if follow_:
        click.echo(f"[{record.job_id} {record.state}]", err=True)
    return ExitCode.OK
