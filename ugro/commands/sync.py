"""`ugro sync`: give every node ugro's scripts and its training environment, then check them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from ugro.commands.context import Context
from ugro.core.errors import ExitCode
from ugro.health import verdicts


def sync(
    ctx: Context,
    *,
    nodes: tuple[str, ...] = (),
    check: bool = False,
    extravars: Mapping[str, Any] | None = None,
) -> ExitCode:
    # rich, only to draw for a person (`--json` and scripts go without it).
    from ugro.display.console import console
    from ugro.display.nodes import health_table

    cluster = ctx.cluster()
    names = [cluster.node(n).name for n in nodes] or cluster.node_names
    result = ctx.run_playbook("sync", nodes=nodes, extravars=extravars, check=check)
    if result.hosts:
        summary = verdicts.assess(cluster, result, names)
        verdicts.save(cluster, summary)
        console.print(health_table(summary))
    result.raise_for_status()
    changed = {h.name: h.changed for h in result.hosts.values() if h.changed}
    if changed:
        click.echo("changed: " + ", ".join(f"{n} ({c} tasks)" for n, c in sorted(changed.items())))
    else:
        click.echo("no changes: every node was already in sync")
    return ExitCode.OK
