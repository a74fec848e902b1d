"""`ugro inventory`: the nodes cluster.yaml describes, as Ansible sees them."""

from __future__ import annotations

import json

import click

from ugro.commands.context import Context
from ugro.core.errors import ExitCode
from ugro.nodes.inventory import inventory_list


def inventory(ctx: Context, *, as_json: bool = False) -> ExitCode:
    cluster = ctx.cluster()
    if as_json:
        click.echo(json.dumps(inventory_list(cluster), indent=2, sort_keys=True))
        return ExitCode.OK
    # rich, only to draw for a person (`--json` and scripts go without it).
    from ugro.display.console import console
    from ugro.display.nodes import inventory_table

    console.print(inventory_table(cluster))
    return ExitCode.OK
