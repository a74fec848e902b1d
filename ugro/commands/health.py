"""`ugro health`: probe every node (SSH, GPUs, torch, disk) and keep the verdicts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import click

from ugro.commands.context import Context
from ugro.core.errors import ExitCode
from ugro.health import monitor, verdicts
from ugro.records.daemon_files import DaemonState
from ugro.records.history import Jobs
from ugro.views import daemon_health as fresh_verdicts
from ugro.views import health_from_daemon, health_history_view


def health(
    ctx: Context,
    *,
    nodes: tuple[str, ...] = (),
    deep: bool = False,
    as_json: bool = False,
    check: bool = False,
    extravars: Mapping[str, Any] | None = None,
    now: bool = False,
) -> ExitCode:
    # rich, only to draw for a person (`--json` and scripts go without it).
    from ugro.display.console import console, err_console
    from ugro.display.nodes import health_table

    cluster = ctx.cluster()
    if not (now or deep or check or extravars):
        answered = from_daemon(ctx, nodes=nodes, as_json=as_json)
        if answered is not None:
            return answered
    names = [cluster.node(name).name for name in nodes] or cluster.node_names
    variables = {**(extravars or {}), **({"ugro_health_deep": True} if deep else {})}
    result = ctx.run_playbook("health", nodes=nodes, extravars=variables, check=check)
    if result.status not in ("successful", "failed") or not result.hosts:
        result.raise_for_status()
    summary = verdicts.assess(cluster, result, names)
    verdicts.save(cluster, summary)

    active = {r.job_id: r.state for r in Jobs(cluster).records().values() if r.active}
    leftovers = verdicts.leftovers(summary, active)
    if as_json:
        answer = summary.to_json() | {"source": "probe", "age_s": 0.0}
        click.echo(json.dumps(answer, indent=2, sort_keys=True))
    else:
        console.print(health_table(summary))
        for warning in (*summary.drift, *leftovers):
            err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    return ExitCode.OK if summary.healthy else ExitCode.FAILED


def daemon_health(ctx: Context) -> tuple[DaemonState, float] | None:
    return fresh_verdicts(ctx.cluster())


def from_daemon(ctx: Context, *, nodes: tuple[str, ...], as_json: bool) -> ExitCode | None:
    found = daemon_health(ctx)
    if found is None:
        return None
    state, age = found
    cluster = ctx.cluster()
    names = [cluster.node(name).name for name in nodes] or cluster.node_names
    healthy = all((state.nodes.get(name) or {}).get("status") == "up" for name in names)
    if as_json:
        click.echo(
            json.dumps(health_from_daemon(cluster, state, age, names), indent=2, sort_keys=True)
        )
    else:
        # rich, for a person only: `health --json` answers without it.
        from ugro.display.console import console
        from ugro.display.nodes import node_samples_table

        console.print(node_samples_table(state, cluster, age, names))
    return ExitCode.OK if healthy else ExitCode.FAILED


def history(ctx: Context, *, node: str | None, as_json: bool) -> ExitCode:
    """What changed on each node, from data/health_history.jsonl (the daemon's probes)."""

    cluster = ctx.cluster()
    name = cluster.node(node).name if node else None
    path = cluster.paths.data / monitor.HISTORY
    changes = monitor.transitions(monitor.read_history(path, name))
    if as_json:
        click.echo(json.dumps(health_history_view(cluster, name), indent=2, sort_keys=True))
        return ExitCode.OK
    if not changes:
        click.echo(f"No health history in {path}: the daemon (`ugro daemon start`) keeps it.")
        return ExitCode.OK
    # rich, only to draw for a person (`--json` and scripts go without it).
    from ugro.display.console import console
    from ugro.display.nodes import health_history_table

    console.print(health_history_table(changes, f"health of {name or cluster.name}: changes"))
    return ExitCode.OK
