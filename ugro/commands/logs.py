"""`ugro logs`: a job's per-rank logs, merged with node and rank prefixes, or one rank's."""

from __future__ import annotations

import click

from ugro.commands.context import Context
from ugro.controller.follow import follow
from ugro.core.errors import ExitCode, UsageError
from ugro.records.controller_files import ControllerHandle
from ugro.records.history import Jobs
from ugro.results.logview import LogView

# How often `logs --follow` asks the nodes (one status run, which brings their logs too).
FOLLOW_CHECK_S = 10.0
# A node whose heartbeat the job's controller has missed this long is not asked for its logs.
SILENT_S = 5.0


def logs(ctx: Context, *, job: str, rank: int | None = None, follow_: bool = False) -> ExitCode:
    cluster = ctx.cluster()
    jobs = Jobs(cluster)
    record = jobs.find(job)
    directory = jobs.experiment_dir(record.job_id) / "logs"
    if record.queued:
        click.echo(
            f"{record.job_id} is queued: it has no logs until it starts "
            "(`ugro queue` says why it waits)."
        )
        return ExitCode.OK
    if follow_ and record.active:
        view = LogView(directory, rank=rank)

        def show() -> None:
            for line in view.new_lines():
                click.echo(line)

        record = follow(
            cluster, record.job_id, on_poll=show, collect_logs=True, check_every=FOLLOW_CHECK_S
        )
        click.echo(f"[{record.job_id} {record.state}]", err=True)
        return ExitCode.OK
    if record.active:
        # The other nodes' logs as they are now, from the nodes the controller hears; a node
        # it does not is named, not waited for.
        from ugro.launch.job_playbooks import collect_logs

        controller = ControllerHandle(jobs.experiment_dir(record.job_id))
        heard = controller.state().silent_s
        workers = [n for n in jobs.nodes(record) if n != cluster.master.name]
        silent = [n for n in workers if heard.get(n, 0.0) >= SILENT_S]
        collect_logs(cluster, record.job_id, [n for n in workers if n not in silent])
        for name in silent:
            click.echo(
                f"{name}: not asked for its logs (no heartbeat for "
                f"{heard[name]:.0f}s); showing what was collected before",
                err=True,
            )
    view = LogView(directory, rank=rank)
    if not view.files():
        which = f" for rank {rank}" if rank is not None else ""
        raise UsageError(f"no logs{which} in {directory}")
    for line in view.new_lines():
        click.echo(line)
    if follow_:
        click.echo(f"[{record.job_id} {record.state}]", err=True)
    return ExitCode.OK
