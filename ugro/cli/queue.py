"""`ugro submit`, `queue`, `cancel` and `daemon`: jobs that wait for their nodes, and the
daemon that runs them.

Each command imports its verb's module when it runs (ugro.commands.<verb>): `ugro --help` loads
click and nothing else.
"""

from __future__ import annotations

import click

from ugro.cli.options import job_options, json_option, names, pass_context
from ugro.commands.context import Context
from ugro.core.errors import UsageError


@click.command(name="submit")
@click.option("--name", required=True, help="Job name (letters, digits, '_', '.', '-').")
@job_options
@click.option("--nodes", metavar="A,B", help="Run on these nodes (default: every node).")
@click.option(
    "--count",
    "--node-count",
    "node_count",
    type=click.IntRange(min=1),
    help="Run on any N free, healthy nodes (--node-count says the same); with Slurm, any N "
    "that Slurm picks.",
)
@click.option(
    "--min-vram",
    type=click.FloatRange(min=0, min_open=True),
    metavar="GB",
    help="With --count: only nodes each of whose GPUs has this much memory.",
)
@click.option(
    "--sweep",
    multiple=True,
    metavar="KEY=V1,V2",
    help="Queue one job per point of the grid (repeatable), named NAME_<key><value>...",
)
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
@pass_context
def submit_command(
    ctx: Context,
    name: str,
    model: str | None,
    dataset: str | None,
    epochs: float | None,
    lr: float | None,
    script: str | None,
    nodes: str | None,
    node_count: int | None,
    min_vram: float | None,
    sweep: tuple[str, ...],
    allow_drift: bool,
    retries: int | None,
    min_nodes: int | None,
    hang_timeout: float | None,
    scheduler: str | None,
    balance: str | None,
    script_args: tuple[str, ...],
) -> int:
    """Queue a job (or a sweep of jobs) and return at once with its id.

    The daemon (`ugro daemon start`) starts it when the nodes it asks for are free and healthy,
    first come first served; a later job may start first on nodes no earlier job asks for.
    Arguments after `--` go to the script.
    """
    from ugro.commands.queue import submit

    return submit(
        ctx,
        name=name,
        seed_options={"--model": model, "--dataset": dataset, "--epochs": epochs, "--lr": lr},
        script=script,
        script_args=script_args,
        nodes=names(nodes),
        node_count=node_count,
        min_vram_gb=min_vram,
        allow_drift=allow_drift,
        retries=retries,
        min_nodes=min_nodes,
        hang_timeout=hang_timeout,
        sweep=sweep,
        balance=balance,
        scheduler=scheduler,
    )


@click.command(name="queue")
@json_option
@click.option("--pause", is_flag=True, help="Hold the queue: no queued job starts.")
@click.option("--resume", is_flag=True, help="Let the queue run again.")
@pass_context
def queue_command(ctx: Context, as_json: bool, pause: bool, resume: bool) -> int:
    """Queued and running jobs: each queued job's position and why it waits."""
    from ugro.commands.queue import queue

    if pause and resume:
        raise UsageError("--pause or --resume, not both")
    return queue(ctx, as_json=as_json, pause=pause, resume=resume)


@click.command(name="cancel")
@click.argument("jobs", nargs=-1, required=True)
@pass_context
def cancel_command(ctx: Context, jobs: tuple[str, ...]) -> int:
    """Remove queued jobs, stop running ones (a sweep's name: all of its jobs)."""
    from ugro.commands.queue import cancel

    return cancel(ctx, refs=jobs)


@click.group()
def daemon() -> None:
    """The daemon: runs the queue, watches the nodes' health, notifies; one per project."""


@daemon.command(name="run")
@pass_context
def daemon_run(ctx: Context) -> int:
    """Run in the foreground (for systemd, or a terminal; Ctrl-C stops it)."""
    from ugro.commands import daemon as command

    return command.run(ctx)


@daemon.command(name="start")
@pass_context
def daemon_start(ctx: Context) -> int:
    """Start it in the background (says where it runs if it already does)."""
    from ugro.commands import daemon as command

    return command.start(ctx)


@daemon.command(name="stop")
@pass_context
def daemon_stop(ctx: Context) -> int:
    """Stop it; running jobs go on with their controllers."""
    from ugro.commands import daemon as command

    return command.stop(ctx)


@daemon.command(name="status")
@json_option
@pass_context
def daemon_status(ctx: Context, as_json: bool) -> int:
    """Its pid, uptime and what it is doing. Exit 1 if none runs."""
    from ugro.commands import daemon as command

    return command.status(ctx, as_json=as_json)


@daemon.command(name="install")
@click.option("--print", "print_only", is_flag=True, help="Print the unit, write nothing.")
@pass_context
def daemon_install(ctx: Context, print_only: bool) -> int:
    """Write a systemd user unit that keeps the daemon running (printed where systemd is not)."""
    from ugro.commands import daemon as command

    return command.install(ctx, print_only=print_only)
