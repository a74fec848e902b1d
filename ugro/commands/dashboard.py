"""`ugro dashboard`: the web dashboard in the foreground."""

from __future__ import annotations

import os

import click

from ugro.commands.context import Context
from ugro.core.errors import ExitCode, UsageError
from ugro.records.daemon_files import DaemonFiles
from ugro.web.serve import Listener, bind, choose_token, server


def dashboard(ctx: Context, *, host: str | None, port: int | None) -> ExitCode:
    cluster = ctx.cluster()
    host = host or cluster.daemon.dashboard_host
    port = port or cluster.daemon.dashboard_port
    listener = Listener(host, port, choose_token(host))
    try:
        sock = bind(host, port)
    except UsageError:
        state = DaemonFiles(cluster.paths.data).live_state()
        served = state.dashboard if state else None
        if served and served == listener.url.split("?")[0]:
            raise UsageError(f"the daemon serves this dashboard already: {served}") from None
        raise
    click.echo(f"The dashboard of {cluster.name}: {listener.url}")
    if listener.token and "UGRO_DASHBOARD_TOKEN" not in os.environ:
        click.echo("(a token made for this run; set UGRO_DASHBOARD_TOKEN to choose one)")
    click.echo("Ctrl-C stops it.")
    server(cluster, listener).run(sockets=[sock])
    return ExitCode.OK
