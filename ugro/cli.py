"""The `ugro` command: parsing and dispatch. Each verb's work is in ugro/commands/<verb>.py.

Imports are deferred into the commands so that `ugro --help` starts in a fraction of a second
(neither Ansible, rich, pydantic nor torch is loaded to print help). Every UgroError is caught
once in `main`, printed as one line, and turned into its exit code; a traceback only ever goes
to the log file.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from ugro.commands.context import Context
from ugro.errors import ExitCode, UgroError, UsageError

log = logging.getLogger("ugro.cli")

pass_context = click.make_pass_decorator(Context)
_nodes_option = click.option(
    "--node", "nodes", multiple=True, metavar="NAME", help="Only this node (repeatable)."
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print it as JSON.")
# What `ugro launch` and `ugro submit` both take: the job, and its controller's options.
_JOB_OPTIONS = (
    click.option("--model", help="Model: hub name, local directory, or tiny-llama."),
    click.option("--dataset", help="Data set: hub name, local .txt file, or builtin."),
    click.option("--epochs", type=click.FloatRange(min=0, min_open=True), help="Epochs."),
    click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Learning rate."),
    click.option(
        "--script", help="Any torchrun-compatible script (default scripts/train_production.py)."
    ),
    click.option(
        "--allow-drift", is_flag=True, help="Launch even if the nodes' environments differ."
    ),
    click.option(
        "--balance",
        type=click.Choice(["auto", "equal", "manual"]),
        help="How the ranks split each batch: auto (by each node's memory and speed, probed; "
        "the default on nodes that differ), equal (the default on alike nodes), manual (each "
        "node's micro_batch_size in cluster.yaml).",
    ),
    click.option(
        "--retries",
        type=click.IntRange(min=0, max=100),
        help="Start a failed or lost job again from its last checkpoint, up to N times "
        "(default: cluster.yaml's communication.retries, else 0).",
    ),
    click.option(
        "--min-nodes",
        type=click.IntRange(min=1),
        help="A retry may go on with this many nodes (the job's first among them) if others "
        "stay down.",
    ),
    click.option(
        "--hang-timeout",
        type=click.FloatRange(min=5),
        help="Seconds without a training step that count as a hang "
        "(default: 10x the median step, 60 s at least, at most the process-group timeout).",
    ),
)


def _job_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_JOB_OPTIONS):
        command = option(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config",
    metavar="PATH",
    help="cluster.yaml to use (default: $UGRO_CONFIG, ./config/cluster.yaml, "
    "~/.config/ugro/cluster.yaml, else the built-in local cluster).",
)
@click.option("-v", "--verbose", count=True, help="More output (-vv for debug).")
@click.version_option(package_name="ugro")
@click.pass_context
def cli(ctx: click.Context, config: str | None, verbose: int) -> None:
    """UGRO: a few SSH-reachable GPU machines as one training cluster.

    \b
    Quick start:
      ugro health              check every node (GPU, torch, disk, SSH)
      ugro launch --name exp1  train on every node, follow it, bring the results home
      ugro results exp1        how it went
      ugro daemon start        run the queue and watch the nodes' health
      ugro submit --name exp2  queue a job for when its nodes are free
      ugro sandbox up          a 3-node cluster on this machine, to try things on
    """
    from ugro.logsetup import setup_terminal

    setup_terminal(verbose)
    ctx.obj = Context(config, verbose)


# --- the cluster --------------------------------------------------------------------------------


@cli.command()
@_json_option
@_nodes_option
@click.option(
    "--deep",
    is_flag=True,
    help="Import torch on every node even if its facts are cached (after a driver change).",
)
@click.option(
    "--now", is_flag=True, help="Probe the nodes even if the daemon's verdicts are fresh."
)
@click.option(
    "--history",
    "show_history",
    is_flag=True,
    help="What changed on each node (up/down, GPU lost, disk filling, driver), from the daemon.",
)
@pass_context
def health(
    ctx: Context, as_json: bool, nodes: tuple[str, ...], deep: bool, now: bool, show_history: bool
) -> int:
    """Probe every node: SSH, GPUs, torch, disk. Exit 1 if any node is unhealthy.

    While the daemon runs, its verdicts (a light probe a minute) answer at once, with their
    age; --now probes anyway. Torch's facts are cached on each node while its environment,
    GPUs and driver are unchanged (an hour at most): importing torch costs seconds and a CUDA
    context on every GPU.
    """
    from ugro.commands import health as command

    if show_history:
        if len(nodes) > 1:
            raise UsageError("--history takes one --node at most")
        return command.history(ctx, node=nodes[0] if nodes else None, as_json=as_json)
    return command.health(ctx, nodes=nodes, deep=deep, as_json=as_json, now=now)


@cli.command()
@_json_option
@click.option(
    "--nodes", metavar="A,B", help="Check these nodes (default: every node); the first leads."
)
@pass_context
def netcheck(ctx: Context, as_json: bool, nodes: str | None) -> int:
    """Measure the network a job would use. Exit 1 if a job could not run on it.

    Each node's interface towards the lead (its MTU, its link speed), the rendezvous port,
    every pair of nodes streaming to each other on a port the kernel picks (as gloo and NCCL
    do), and an all-reduce sweep over the real backend with its bus bandwidth; what the LoRA
    gradients' all-reduce will cost per step. Names a pair that cannot connect, a slow link or
    an MTU that differs, with the fix. A launch runs it when its last result is missing or old.
    """
    from ugro.commands.netcheck import netcheck as run

    return run(ctx, nodes=tuple(n for n in (nodes or "").split(",") if n), as_json=as_json)


@cli.command()
@_json_option
@click.option("--recent", default=10, show_default=True, help="How many recent jobs to show.")
@pass_context
def status(ctx: Context, as_json: bool, recent: int) -> int:
    """The cluster's last known health, and running and recent jobs (live from the nodes)."""
    from ugro.commands.status import status as run

    return run(ctx, recent=recent, as_json=as_json)


@cli.command()
@click.option(
    "--json", "as_json", is_flag=True, help="Print it as `ansible-inventory --list` does."
)
@pass_context
def inventory(ctx: Context, as_json: bool) -> int:
    """The Ansible inventory derived from cluster.yaml."""
    from ugro.commands.inventory import inventory as run

    return run(ctx, as_json=as_json)


@cli.command()
@_nodes_option
@pass_context
def sync(ctx: Context, nodes: tuple[str, ...]) -> int:
    """Give every node the scripts and its training environment; then check them."""
    from ugro.commands.sync import sync as run

    return run(ctx, nodes=nodes)


@cli.command(name="run")
@click.argument("playbook")
@click.argument("job", required=False)
@click.option(
    "-e",
    "--extra-var",
    "extra",
    multiple=True,
    metavar="KEY=VALUE",
    help="Extra variable for the playbook (repeatable).",
)
@_nodes_option
@click.option("--check", is_flag=True, help="Dry run: Ansible's check mode, nothing changes.")
@pass_context
def run_command(
    ctx: Context,
    playbook: str,
    job: str | None,
    extra: tuple[str, ...],
    nodes: tuple[str, ...],
    check: bool,
) -> int:
    """Run one of ugro's playbooks (or your own) against the cluster.

    PLAYBOOK is a name such as `health`, or a path to a .yml file. ugro's own take their
    command's path: `ugro run launch exp1` is `ugro launch --name exp1`, `ugro run stop exp1` is
    `ugro stop exp1`, each with the -e variables. JOB, when given, also reaches your own
    playbooks as `ugro_job_id` and `ugro_job_name`.
    """
    from ugro.commands.run import run

    return run(ctx, playbook=playbook, job=job, extra=extra, nodes=nodes, check=check)


# --- jobs ---------------------------------------------------------------------------------------


@cli.command(name="launch")
@click.option("--name", help="Job name (letters, digits, '_', '.', '-').")
@click.option(
    "--resume",
    "resume_job",
    metavar="JOB",
    help="Continue an ended job from its last complete checkpoint, as its next attempt.",
)
@_job_options
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
        model=model,
        dataset=dataset,
        epochs=epochs,
        lr=lr,
        script=script,
        nodes=tuple(n for n in (nodes or "").split(",") if n),
        detach=detach,
        dry_run=dry_run,
        allow_drift=allow_drift,
        verbose=verbose,
        script_args=script_args,
    )


@cli.command()
@click.argument("job")
@click.option("--rank", type=click.IntRange(min=0), help="Only this global rank.")
@click.option("--follow", "-f", "follow_", is_flag=True, help="Keep printing until the job ends.")
@pass_context
def logs(ctx: Context, job: str, rank: int | None, follow_: bool) -> int:
    """A job's per-rank logs (merged and prefixed by node and rank, or one rank's)."""
    from ugro.commands.logs import logs as run

    return run(ctx, job=job, rank=rank, follow_=follow_)


@cli.command()
@click.argument("job")
@_json_option
@pass_context
def results(ctx: Context, job: str, as_json: bool) -> int:
    """A job's status, duration, losses, throughput, checkpoints and artifacts."""
    from ugro.commands.results import results as run

    return run(ctx, job=job, as_json=as_json)


@cli.command()
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


@cli.command()
@click.argument("jobs", nargs=-1, required=True)
@_json_option
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


@cli.command()
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


@cli.command(name="stop")
@click.argument("job")
@pass_context
def stop_command(ctx: Context, job: str) -> int:
    """Stop every rank of a job on every node, and verify nothing of it is left."""
    from ugro.commands.stop import stop

    return stop(ctx, job=job)


@cli.command(name="reset")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for a confirmation.")
@click.option("--nodes", metavar="A,B", help="Only these nodes.")
@pass_context
def reset_command(ctx: Context, yes: bool, nodes: str | None) -> int:
    """End every UGRO job's processes on every node, and verify none is left."""
    from ugro.commands.reset import reset

    return reset(ctx, yes=yes, nodes=tuple(n for n in (nodes or "").split(",") if n))


@cli.command(name="collect")
@click.argument("job")
@pass_context
def collect_command(ctx: Context, job: str) -> int:
    """Bring a job's logs and every node's outputs to the master now."""
    from ugro.commands.stop import collect

    return collect(ctx, job=job)


# --- the queue and the daemon --------------------------------------------------------------------


@cli.command(name="submit")
@click.option("--name", required=True, help="Job name (letters, digits, '_', '.', '-').")
@_job_options
@click.option("--nodes", metavar="A,B", help="Run on these nodes (default: every node).")
@click.option("--node-count", type=click.IntRange(min=1), help="Run on any N free, healthy nodes.")
@click.option(
    "--min-vram",
    type=click.FloatRange(min=0, min_open=True),
    metavar="GB",
    help="With --node-count: only nodes each of whose GPUs has this much memory.",
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
        nodes=tuple(n for n in (nodes or "").split(",") if n),
        node_count=node_count,
        min_vram_gb=min_vram,
        allow_drift=allow_drift,
        retries=retries,
        min_nodes=min_nodes,
        hang_timeout=hang_timeout,
        sweep=sweep,
        balance=balance,
    )


@cli.command(name="queue")
@_json_option
@click.option("--pause", is_flag=True, help="Hold the queue: no queued job starts.")
@click.option("--resume", is_flag=True, help="Let the queue run again.")
@pass_context
def queue_command(ctx: Context, as_json: bool, pause: bool, resume: bool) -> int:
    """Queued and running jobs: each queued job's position and why it waits."""
    from ugro.commands.queue import queue

    if pause and resume:
        raise UsageError("--pause or --resume, not both")
    return queue(ctx, as_json=as_json, pause=pause, resume=resume)


@cli.command(name="cancel")
@click.argument("jobs", nargs=-1, required=True)
@pass_context
def cancel_command(ctx: Context, jobs: tuple[str, ...]) -> int:
    """Remove queued jobs, stop running ones (a sweep's name: all of its jobs)."""
    from ugro.commands.queue import cancel

    return cancel(ctx, refs=jobs)


@cli.group()
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
@_json_option
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


# --- sandbox ------------------------------------------------------------------------------------


@cli.group()
def sandbox() -> None:
    """A real multi-host cluster on this machine (network namespaces + sshd). Needs root."""


_name_option = click.option("--name", default="ugro", show_default=True, help="Sandbox name.")


@sandbox.command(name="up")
@_name_option
@click.option("--nodes", default=3, show_default=True, type=int, help="Nodes, master included.")
@click.option("--subnet", default="10.213.0.0/24", show_default=True, help="Private IPv4 subnet.")
@click.option(
    "--wheelhouse",
    metavar="DIR",
    envvar="UGRO_WHEELHOUSE",
    help="Extra wheel source for the nodes' environment (air-gapped machines) [$UGRO_WHEELHOUSE].",
)
@click.option(
    "--package",
    "packages",
    multiple=True,
    metavar="SPEC",
    help="Packages for the nodes' environment (default: torch at this machine's version).",
)
def sandbox_up(
    name: str, nodes: int, subnet: str, wheelhouse: str | None, packages: tuple[str, ...]
) -> int:
    """Bring a sandbox up and write its cluster.yaml."""
    from ugro.commands import sandbox as run

    return run.up(name=name, nodes=nodes, subnet=subnet, wheelhouse=wheelhouse, packages=packages)


@sandbox.command(name="down")
@_name_option
@click.option("--purge-env", is_flag=True, help="Also delete the nodes' shared Python environment.")
def sandbox_down(name: str, purge_env: bool) -> int:
    """Remove everything the sandbox made (safe to repeat)."""
    from ugro.commands import sandbox as run

    return run.down(name=name, purge_env=purge_env)


@sandbox.command(name="status")
@_name_option
@_json_option
def sandbox_status(name: str, as_json: bool) -> int:
    """Nodes, addresses, users, and whether each sshd answers. Exit 1 if one does not."""
    from ugro.commands import sandbox as run

    return run.status(name=name, as_json=as_json)


@sandbox.command(name="fault")
@click.argument("node")
@click.argument(
    "action",
    type=click.Choice(["down", "up", "partition", "heal", "slow", "cpu", "mtu", "block"]),
)
@_name_option
@click.option("--delay-ms", type=click.IntRange(min=0), help="slow: added delay each way (netem).")
@click.option("--rate-kbit", type=click.IntRange(min=0), help="slow: bandwidth cap (tbf).")
@click.option(
    "--percent", type=click.IntRange(1, 100), help="cpu: the node's share of a CPU (100: no limit)."
)
@click.option("--mtu", type=click.IntRange(576, 9000), help="mtu: the node's link MTU.")
@click.option("--peer", metavar="NODE", help="block: the worker whose packets this one drops.")
def sandbox_fault(
    name: str,
    node: str,
    action: str,
    delay_ms: int | None,
    rate_kbit: int | None,
    percent: int | None,
    mtu: int | None,
    peer: str | None,
) -> int:
    """Inject a fault: NODE down|up, partition|heal, slow --delay-ms N / --rate-kbit N,
    cpu --percent N (a slower node), mtu --mtu N, block --peer NODE (the pair cannot connect).
    heal undoes every one but down."""
    from ugro.commands import sandbox as run

    return run.fault(
        name=name,
        node=node,
        action=action,
        delay_ms=delay_ms,
        rate_kbit=rate_kbit,
        percent=percent,
        mtu=mtu,
        peer=peer,
    )


# --- entry point --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    try:
        code = cli.main(args=argv, prog_name="ugro", standalone_mode=False)
    except UgroError as exc:
        log.debug("ugro error", exc_info=True)
        click.echo(f"ugro: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("ugro: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(ExitCode.USAGE)
    except KeyboardInterrupt:
        click.echo("ugro: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        log.exception("unexpected error")
        click.echo(
            f"ugro: internal error: {type(exc).__name__}: {exc} (details in the log)", err=True
        )
        sys.exit(ExitCode.FAILED)
    sys.exit(code if isinstance(code, int) else ExitCode.OK)
