"""`ugro launch`, `logs`, `results`, `plot`, `compare`, `dashboard`, `stop`, `reset` and
`collect`: a job's life and what it left.

Each command imports its verb's module when it runs (ugro.commands.<verb>): `ugro --help` loads
click and nothing else.
"""

from __future__ import annotations

import click

from ugro.cli.options import job_options, json_option, names, pass_context
from ugro.commands.context import Context


@click.command(name="launch")
@click.option("--name", help="Job name (letters, digits, '_', '.', '-').")
@click.option(
    "--resume",
    "resume_job",
    metavar="JOB",
    help="Continue an ended job from its last complete checkpoint, as its next attempt.",
)
@job_options
@click.option(
    "--nodes",
    metavar="A,B",
    help="Run on these nodes only; the first in rank order leads (hosts the rendezvous).",
)
@click.option("--detach", is_flag=True, help="Start the job and return at once.")
@click.option(
    "--dry-run", is_flag=True, help="Check mode: print each node's command, start nothing."
)
@click.option("--verbose", is_flag=True, help="Print every metrics record while following.")
@click.option("--force", is_flag=True, help="Launch on nodes that run another UGRO job.")
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
@pass_context
def launch_command(
    ctx: Context,
    name: str,
    model: str | None,
    dataset: str | None,
    epochs: float | None,
    lr: float | None,
    script: str | None,
    nodes: str | None,
    detach: bool,
    dry_run: bool,
    allow_drift: bool,
    verbose: bool,
    retries: int | None,
    min_nodes: int | None,
    hang_timeout: float | None,
    scheduler: str | None,
    force: bool,
    resume_job: str | None,
    balance: str | None,
    script_args: tuple[str, ...],
) -> int:
    """Train across the cluster, then follow the job until it ends (Ctrl-C detaches).

    The job has a controller of its own on the master, which watches it whether or not you
    follow: Ctrl-C, a closed terminal or a killed `ugro` change nothing. Arguments after `--`
    go to the script.
    """
    from ugro.commands.launch import launch

    return launch(
        ctx,
        name=name,
        resume_job=resume_job,
        retries=retries,
        min_nodes=min_nodes,
        hang_timeout=hang_timeout,
        force=force,
        balance=balance,
        scheduler=scheduler,
        model=model,
        dataset=dataset,
        epochs=epochs,
        lr=lr,
        script=script,
        nodes=names(nodes),
        detach=detach,
        dry_run=dry_run,
        allow_drift=allow_drift,
        verbose=verbose,
        script_args=script_args,
    )


@click.command()
@click.argument("job")
@click.option("--rank", type=click.IntRange(min=0), help="Only this global rank.")
@click.option("--follow", "-f", "follow_", is_flag=True, help="Keep printing until the job ends.")
@pass_context
def logs(ctx: Context, job: str, rank: int | None, follow_: bool) -> int:
    """A job's per-rank logs (merged and prefixed by node and rank, or one rank's)."""
    from ugro.commands.logs import logs as run

    return run(ctx, job=job, rank=rank, follow_=follow_)


@click.command()
@click.argument("job")
@json_option
@pass_context
def results(ctx: Context, job: str, as_json: bool) -> int:
    """A job's status, duration, losses, throughput, checkpoints and artifacts."""
    from ugro.commands.results import results as run

    return run(ctx, job=job, as_json=as_json)


@click.command()
@click.argument("jobs", nargs=-1, required=True)
@click.option("-o", "--output", "out", metavar="FILE.png", help="Where the PNG goes.")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    type=click.Choice(["loss", "lr", "tokens_per_s", "step_time", "memory", "utilisation"]),
    help="Only this panel (repeatable; default: every panel with data).",
)
@pass_context
def plot(ctx: Context, jobs: tuple[str, ...], out: str | None, metrics: tuple[str, ...]) -> int:
    """Loss, learning rate, tokens/s, each rank's step time and each node's memory and
    utilisation of one job or several (a sweep's name stands for its jobs), in one PNG
    (default: plot.png in the job's directory, or here for several)."""
    from ugro.commands.plot import plot as run

    return run(ctx, names=list(jobs), out=out, metrics=list(metrics))


@click.command()
@click.argument("jobs", nargs=-1, required=True)
@json_option
@click.option("-o", "--output", "out", metavar="FILE.png", help="Also draw their curves here.")
@click.option("--all", "show_all", is_flag=True, help="Also list what is the same.")
@pass_context
def compare(
    ctx: Context, jobs: tuple[str, ...], as_json: bool, out: str | None, show_all: bool
) -> int:
    """What differs between jobs (settings, script, commit, nodes, environments) and how each
    did; a sweep's name stands for its jobs."""
    from ugro.commands.compare import compare as run

    return run(ctx, names=list(jobs), as_json=as_json, out=out, show_all=show_all)


@click.command()
@click.option(
    "--host", help="Address to listen on (default: cluster.yaml's dashboard.host, 127.0.0.1)."
)
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: dashboard.port, 8265).")
@pass_context
def dashboard(ctx: Context, host: str | None, port: int | None) -> int:
    """The web dashboard: nodes and their health, jobs and the queue, each job's live curves,
    ranks, nodes and logs, comparisons. Read-only; on an address other than loopback it
    needs a token (UGRO_DASHBOARD_TOKEN, else one made and printed now)."""
    from ugro.commands.dashboard import dashboard as run

    return run(ctx, host=host, port=port)


@click.command(name="stop")
@click.argument("job")
@pass_context
def stop_command(ctx: Context, job: str) -> int:
    """Stop every rank of a job on every node, and verify nothing of it is left."""
    from ugro.commands.stop import stop

    return stop(ctx, job=job)


@click.command(name="reset")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for a confirmation.")
@click.option("--nodes", metavar="A,B", help="Only these nodes.")
@pass_context
def reset_command(ctx: Context, yes: bool, nodes: str | None) -> int:
    """End every UGRO job's processes on every node, and verify none is left."""
    from ugro.commands.reset import reset

    return reset(ctx, yes=yes, nodes=names(nodes))


@click.command(name="collect")
@click.argument("job")
@pass_context
def collect_command(ctx: Context, job: str) -> int:
    """Bring a job's logs and every node's outputs to the master now."""
    from ugro.commands.stop import collect

    return collect(ctx, job=job)
