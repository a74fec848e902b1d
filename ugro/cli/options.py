"""What several commands' options share: the context, node selection, --json, a job's options.

One meaning per option: `--nodes A,B` is always a list of node names (`--node NAME`, repeatable,
says the same one at a time); a number of nodes is `--count N`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from ugro.commands.context import Context

pass_context = click.make_pass_decorator(Context)
json_option = click.option("--json", "as_json", is_flag=True, help="Print it as JSON.")
_node_option = click.option(
    "--node", "node", multiple=True, metavar="NAME", help="Only this node (repeatable)."
)
_nodes_list_option = click.option(
    "--nodes", "node_list", metavar="A,B", help="Only these nodes (a comma-separated list)."
)


def node_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--node NAME (repeatable) and --nodes A,B, given to the command together as `nodes`."""

    # wraps() carries the options declared below this one (click keeps them on the function).
    @functools.wraps(command)
    def merged(*args: Any, node: tuple[str, ...], node_list: str | None, **kwargs: Any) -> Any:
        return command(*args, nodes=(*node, *names(node_list)), **kwargs)

    return _node_option(_nodes_list_option(merged))


def names(listed: str | None) -> tuple[str, ...]:
    """`--nodes A,B` as names."""
    return tuple(n for n in (listed or "").split(",") if n)


# What `ugro launch` and `ugro submit` both take: the job, and its controller's options.
JOB_OPTIONS = (
    click.option("--model", help="Model: hub name, local directory, or tiny-llama."),
    click.option(
        "--dataset",
        help="Data set: hub name, a .txt/.jsonl/.json file on every node, builtin or builtin-chat.",
    ),
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
        "--scheduler",
        type=click.Choice(["ugro", "slurm"]),
        help="Who starts the job on its nodes: UGRO, or Slurm (deployed by `ugro slurm up`) "
        "from its queue (default: cluster.yaml's scheduler, else ugro).",
    ),
    click.option(
        "--hang-timeout",
        type=click.FloatRange(min=5),
        help="Seconds without a training step that count as a hang "
        "(default: 10x the median step, 60 s at least, at most the process-group timeout).",
    ),
)


def job_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of JOB_OPTIONS, in their order."""
    for option in reversed(JOB_OPTIONS):
        command = option(command)
    return command
