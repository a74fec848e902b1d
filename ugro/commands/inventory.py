"""`ugro inventory`: the nodes cluster.yaml describes, as Ansible sees them."""

from __future__ import annotations

import json

import click

from ugro.commands.context import Context
from ugro.errors import ExitCode


def inventory(ctx: Context, *, as_json: bool = False) -> ExitCode:
    from ugro.inventory import inventory_list

    cluster = ctx.cluster()
    if as_json:
        click.echo(json.dumps(inventory_list(cluster), indent=2, sort_keys=True))
        return ExitCode.OK
    from ugro.display import console, inventory_table

    console.print(inventory_table(cluster))
    return ExitCode.OK
