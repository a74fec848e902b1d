"""`ugro sandbox up|down|status|fault`: a real multi-host cluster on this machine."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import click

from ugro.core.errors import ExitCode, UsageError
from ugro.sandbox import faults, lifecycle
from ugro.sandbox import status as sandbox_status


def up(
    *,
    name: str,
    nodes: int,
    subnet: str,
    wheelhouse: str | None,
    packages: tuple[str, ...],
    bare: bool = False,
    slurm: bool = False,
) -> ExitCode:
    if slurm and bare:
        raise UsageError(
            "--slurm needs enrolled nodes: drop --bare (or enrol them, then `ugro slurm up`)"
        )
    started = time.monotonic()
    box = lifecycle.up(
        name,
        nodes=nodes,
        subnet=subnet,
        wheelhouse=wheelhouse,
        packages=list(packages) or None,
        bare=bare,
        slurm=slurm,
        echo=lambda line: click.echo(line, err=True),
    )
    click.echo(
        f"Sandbox {box.name} is up: {len(box.nodes) + 1} nodes on {box.subnet} "
        f"in {time.monotonic() - started:.1f}s."
    )
    click.echo(f"Cluster file: {box.cluster_file}")
    if box.bare:
        click.echo(f"Its nodes are bare; their users' password is in {box.password_file}.")
        for node in box.nodes:
            click.echo(
                f"Enrol:        ugro --config {box.cluster_file} node add {node.name} "
                f"--ip {node.address} --user {node.user}"
            )
    else:
        click.echo(f"Try it:       ugro --config {box.cluster_file} health")
    if slurm:
        return _deploy_slurm(box.cluster_file)
    return ExitCode.OK


def _deploy_slurm(cluster_file: Path) -> ExitCode:
    """The sandbox's Slurm, deployed as on real hosts: by `ugro slurm up` (the same role)."""
    # The cluster and ansible-runner, only for --slurm.
    from ugro.config import load_cluster
    from ugro.slurm import deploy

    started = time.monotonic()
    deployed = deploy.up(load_cluster(str(cluster_file)))
    click.echo(
        f"Slurm is up on it ({deployed.changed} changes, {time.monotonic() - started:.1f}s): "
        f"ugro --config {cluster_file} slurm status"
    )
    return ExitCode.OK


def down(*, name: str, purge_env: bool) -> ExitCode:
    removed = lifecycle.down(name, purge_env=purge_env)
    click.echo(f"Sandbox {name} is down: removed {removed.describe()}.")
    return ExitCode.OK


def status(*, name: str, as_json: bool) -> ExitCode:
    box, rows = sandbox_status.status(name)
    if as_json:
        click.echo(
            json.dumps({"sandbox": asdict(box), "nodes": [asdict(r) for r in rows]}, indent=2)
        )
    else:
        # rich, only to draw for a person (`--json` and scripts go without it).
        from ugro.display.console import console
        from ugro.display.nodes import sandbox_table

        console.print(sandbox_table(box, rows))
        click.echo(f"Cluster file: {box.cluster_file}")
    return ExitCode.OK if all(row.sshd == "answers" for row in rows) else ExitCode.FAILED


def fault(
    *,
    name: str,
    node: str,
    action: str,
    delay_ms: int | None = None,
    rate_kbit: int | None = None,
    percent: int | None = None,
    mtu: int | None = None,
    peer: str | None = None,
    tool: str | None = None,
) -> ExitCode:
    faults.fault(
        name,
        node,
        action,
        delay_ms=delay_ms,
        rate_kbit=rate_kbit,
        percent=percent,
        mtu=mtu,
        peer=peer,
        tool=tool,
    )
    click.echo(f"{node}: {action} done.")
    return ExitCode.OK
