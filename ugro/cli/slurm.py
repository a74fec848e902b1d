"""`ugro slurm up|status|down`: Slurm on the cluster (roles/ugro_slurm)."""

from __future__ import annotations

import click

from ugro.cli.options import json_option, pass_context
from ugro.commands.context import Context


@click.group()
def slurm() -> None:
    """Deploy Slurm on the cluster, see it, remove it.

    \b
      ugro slurm up        munge everywhere, slurmctld on the master, slurmd on every node
      ugro slurm status    each node's Slurm state and reason, beside UGRO's health
      ugro slurm down      stop the daemons, remove the configuration and state

    Needs root on every node (sudo). Jobs run as slurm.job_user (the master's user unless
    set), which must have one UID on every node.
    """


@slurm.command(name="up")
@pass_context
def up_command(ctx: Context) -> int:
    """Deploy Slurm, or check it: a second run changes nothing."""
    from ugro.commands import slurm as commands  # imported when the verb runs

    return commands.up(ctx)


@slurm.command(name="status")
@json_option
@pass_context
def status_command(ctx: Context, as_json: bool) -> int:
    """Each node's Slurm state beside UGRO's health; exit 1 if one takes no jobs."""
    from ugro.commands import slurm as commands  # imported when the verb runs

    return commands.status(ctx, as_json=as_json)


@slurm.command(name="down")
@pass_context
def down_command(ctx: Context) -> int:
    """Stop Slurm's daemons and remove what `up` made."""
    from ugro.commands import slurm as commands  # imported when the verb runs

    return commands.down(ctx)
