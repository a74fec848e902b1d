"""`ugro health`: probe every node (SSH, GPUs, torch, disk) and keep the verdicts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import click

from ugro.commands.context import Context
from ugro.errors import ExitCode


def health(
    ctx: Context,
    *,
    nodes: tuple[str, ...] = (),
    deep: bool = False,
    as_json: bool = False,
    check: bool = False,
    extravars: Mapping[str, Any] | None = None,
) -> ExitCode:
    from ugro import health as verdicts
    from ugro.display import console, err_console, health_table

    cluster = ctx.cluster()
    names = [cluster.node(name).name for name in nodes] or cluster.node_names
    variables = {**(extravars or {}), **({"ugro_health_deep": True} if deep else {})}
    result = ctx.run_playbook("health", nodes=nodes, extravars=variables, check=check)
    if result.status not in ("successful", "failed") or not result.hosts:
        result.raise_for_status()
    summary = verdicts.assess(cluster, result, names)
    verdicts.save(cluster, summary)
    from ugro.jobs import Jobs

    active = {r.job_id: r.state for r in Jobs(cluster).records().values() if r.active}
    leftovers = verdicts.leftovers(summary, active)
    if as_json:
        click.echo(json.dumps(summary.to_json(), indent=2, sort_keys=True))
    else:
        console.print(health_table(summary))
        for warning in (*summary.drift, *leftovers):
            err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    return ExitCode.OK if summary.healthy else ExitCode.FAILED
