"""`ugro netcheck`: the job's network, measured: routes, ports, pairs, an all-reduce sweep."""

from __future__ import annotations

import json

import click

from ugro.commands.context import Context
from ugro.core.errors import ExitCode, UsageError
from ugro.network import check as checker
from ugro.network.findings import errors


def netcheck(ctx: Context, *, nodes: tuple[str, ...] = (), as_json: bool = False) -> ExitCode:
    # rich, only to draw for a person (`--json` and scripts go without it).
    from ugro.display.console import console, err_console
    from ugro.display.nodes import netcheck_tables

    cluster = ctx.cluster()
    names = [cluster.node(name).name for name in nodes] or cluster.node_names
    names = [name for name in cluster.node_names if name in names]  # rank order: the lead first
    if len(names) < 2:
        raise UsageError("netcheck needs two nodes or more: there is no network between one")
    report = checker.check(cluster, names)
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        for table in netcheck_tables(report):
            console.print(table)
        for finding in report["findings"]:
            colour = "red" if finding["severity"] == "error" else "yellow"
            severity, message, fix = finding["severity"], finding["message"], finding["fix"]
            err_console.print(f"[{colour}]{severity}:[/] {message}\n  fix: {fix}", highlight=False)
    return ExitCode.FAILED if errors(report) else ExitCode.OK
