"""`ugro netcheck`: the job's network, measured: routes, ports, pairs, an all-reduce sweep."""

from __future__ import annotations

import json

import click

from ugro.commands.context import Context
from ugro.errors import ExitCode, UsageError


def netcheck(ctx: Context, *, nodes: tuple[str, ...] = (), as_json: bool = False) -> ExitCode:
    from ugro import netcheck as checker
    from ugro.display import console, err_console, netcheck_tables

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
    return ExitCode.FAILED if checker.errors(report) else ExitCode.OK
