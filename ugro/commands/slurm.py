"""`ugro slurm up|status|down`: Slurm deployed on the cluster by the ugro_slurm role."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from ugro.commands.context import Context
from ugro.core.errors import ExitCode
from ugro.core.files import read_json


def up(ctx: Context) -> ExitCode:
    # rich and ansible-runner, for up and down only: status answers without them.
    from ugro.display.progress import RunProgress
    from ugro.slurm import deploy

    cluster = ctx.cluster()
    started = time.monotonic()
    with RunProgress("slurm", len(cluster.nodes)) as progress:
        deployed = deploy.up(cluster, on_event=progress)
    took = time.monotonic() - started
    if deployed.changed:
        click.echo(
            f"Slurm is up on {len(cluster.nodes)} nodes ({deployed.changed} changes, {took:.1f}s)."
        )
    else:
        click.echo(f"Slurm is up on {len(cluster.nodes)} nodes; nothing changed ({took:.1f}s).")
    return status(ctx)


def down(ctx: Context) -> ExitCode:
    # rich and ansible-runner, as for up.
    from ugro.display.progress import RunProgress
    from ugro.slurm import deploy

    cluster = ctx.cluster()
    with RunProgress("slurm", len(cluster.nodes)) as progress:
        deploy.down(cluster, on_event=progress)
    click.echo(
        f"Slurm is down on {len(cluster.nodes)} nodes: daemons stopped, its configuration and "
        "state removed (the packages and the munge key stay)."
    )
    return ExitCode.OK


def status(ctx: Context, *, as_json: bool = False) -> ExitCode:
    """Each node's Slurm state and reason, beside UGRO's last health verdict."""
    from ugro.slurm.deploy import node_states  # subprocess only: no Ansible, no rich

    cluster = ctx.cluster()
    states = node_states(cluster)
    saved = read_json(cluster.paths.cluster_state) or {}
    found = saved.get("nodes")
    verdicts: dict[str, Any] = found if isinstance(found, dict) else {}
    rows = []
    for name in cluster.node_names:
        slurm = states.get(name)
        health = verdicts.get(name) or {}
        rows.append(
            {
                "node": name,
                "slurm": slurm.state if slurm else "unknown to Slurm",
                "reason": slurm.reason if slurm and slurm.reason != "none" else "",
                "takes_jobs": bool(slurm and slurm.takes_jobs),
                "health": health.get("status", "not checked"),
            }
        )
    if as_json:
        click.echo(json.dumps({"nodes": rows}, indent=2))
    else:
        width = max(len(row["node"]) for row in rows)
        for row in rows:
            reason = f" ({row['reason']})" if row["reason"] else ""
            click.echo(
                f"{row['node']:<{width}}  slurm: {row['slurm']}{reason}  health: {row['health']}"
            )
    return ExitCode.OK if all(row["takes_jobs"] for row in rows) else ExitCode.FAILED
