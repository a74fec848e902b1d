"""`ugro health`, `netcheck`, `status`, `inventory`, `sync` and `run`: the cluster itself.

Each command imports its verb's module when it runs (ugro.commands.<verb>): `ugro --help` loads
click and nothing else.
"""

from __future__ import annotations

import click

from ugro.cli.options import json_option, names, node_options, pass_context
from ugro.commands.context import Context
from ugro.core.errors import UsageError


@click.command()
@json_option
@node_options
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


@click.command()
@json_option
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

    return run(ctx, nodes=names(nodes), as_json=as_json)


@click.command()
@json_option
@click.option("--recent", default=10, show_default=True, help="How many recent jobs to show.")
@pass_context
def status(ctx: Context, as_json: bool, recent: int) -> int:
    """The cluster's last known health, and running and recent jobs (live from the nodes)."""
    from ugro.commands.status import status as run

    return run(ctx, recent=recent, as_json=as_json)


@click.command()
@click.option(
    "--json", "as_json", is_flag=True, help="Print it as `ansible-inventory --list` does."
)
@pass_context
def inventory(ctx: Context, as_json: bool) -> int:
    """The Ansible inventory derived from cluster.yaml."""
    from ugro.commands.inventory import inventory as run

    return run(ctx, as_json=as_json)


@click.command()
@node_options
@pass_context
def sync(ctx: Context, nodes: tuple[str, ...]) -> int:
    """Give every node the scripts and its training environment; then check them."""
    from ugro.commands.sync import sync as run

    return run(ctx, nodes=nodes)


@click.command(name="run")
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
@node_options
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
