"""`ugro serve up|status|logs|down`: jobs' adapters behind an OpenAI-compatible endpoint."""

from __future__ import annotations

import json
import subprocess
import time
from typing import TYPE_CHECKING

import click

from ugro.commands.context import Context
from ugro.core.errors import ExitCode, UsageError
from ugro.core.layout import check_name
from ugro.nodes.ssh import on_node
from ugro.records.deployments import (
    FAILED,
    SERVING,
    STOPPED,
    DeploymentFiles,
    all_deployments,
    deployments_root,
)
from ugro.views import deployment_row

if TYPE_CHECKING:
    from ugro.serve.deploy import UpRequest

UP_WAIT_S = 600.0
DOWN_WAIT_S = 90.0
POLL_S = 0.5
# A controller just spawned takes a moment to hold its lock: only one silent longer is revived.
REVIVE_AFTER_S = 5.0


def serve_up(ctx: Context, request: UpRequest, *, detach: bool = False) -> ExitCode:
    # rich and ansible-runner, for `up` only: status, logs and down answer without them.
    from ugro.display.progress import RunProgress
    from ugro.serve.deploy import up

    cluster = ctx.cluster()
    with RunProgress("serve", 1) as progress:
        started = up(cluster, request, on_event=progress)
    deployment = started.deployment
    click.echo(
        f"{deployment.name}: {deployment.engine} on {deployment.node} ({started.engine_reason}); "
        f"models: {', '.join(deployment.model_ids)}"
    )
    click.echo(f"  URL: {deployment.url}")
    if started.new_key:
        click.echo(f"  key (shown once; kept 0600 in {started.files.key_path}): {started.new_key}")
    elif deployment.needs_key:
        click.echo(
            f"  key: yours (--api-key-file); a copy is kept 0600 in {started.files.key_path}"
        )
    if detach:
        click.echo(f"Loading; `ugro serve status {deployment.name}` says when it serves.")
        return ExitCode.OK
    return _wait_until(started.files, (SERVING, FAILED, STOPPED), UP_WAIT_S, want=SERVING)


def serve_status(ctx: Context, *, name: str | None = None, as_json: bool = False) -> ExitCode:
    cluster = ctx.cluster()
    found = [_files(ctx, name)] if name else all_deployments(cluster)
    for files in found:
        if files.ensure():
            click.echo(f"{files.name}: its controller had stopped; started it again.", err=True)
    rows = [deployment_row(files) for files in found]
    if as_json:
        click.echo(json.dumps(rows, indent=2, sort_keys=True))
        return ExitCode.OK
    if not rows:
        click.echo("No deployments: `ugro serve up JOB` serves a job's adapter.")
        return ExitCode.OK
    # rich, for a person only: `serve status --json` answers without it.
    from ugro.display.console import console
    from ugro.display.serving import deployments_table

    console.print(deployments_table(rows))
    for row in rows:
        if row["message"]:
            click.echo(f"{row['name']}: {row['message']}")
    return ExitCode.OK


def serve_logs(ctx: Context, *, name: str, lines: int = 50, follow: bool = False) -> ExitCode:
    """The server's log, read on its node (over SSH, as everything on a node is)."""
    cluster = ctx.cluster()
    files = _files(ctx, name)
    deployment = files.deployment()
    node = cluster.node(deployment.node)
    command = ["tail", "-n", str(lines), *(["-F"] if follow else []), "--"]
    argv = on_node(cluster, node, [*command, f"{deployment.node_dir}/server.log"])
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, check=False)
    except KeyboardInterrupt:
        return ExitCode.OK
    if done.returncode != 0 and not follow:
        raise UsageError(f"{node.name}: cannot read {deployment.node_dir}/server.log")
    return ExitCode.OK


def serve_down(ctx: Context, *, name: str) -> ExitCode:
    files = _files(ctx, name)
    state = files.state()
    if state.state in (STOPPED, FAILED) and not files.alive():
        click.echo(f"{name} is already {state.state}: {state.message}")
        return ExitCode.OK
    files.request_stop()
    files.ensure()
    return _wait_until(files, (STOPPED, FAILED), DOWN_WAIT_S, want=STOPPED)


def _files(ctx: Context, name: str) -> DeploymentFiles:
    check_name(name)
    cluster = ctx.cluster()
    files = DeploymentFiles(deployments_root(cluster) / name)
    if not files.exists():
        known = ", ".join(f.name for f in all_deployments(cluster)) or "none"
        raise UsageError(f"no deployment named {name!r} (deployments: {known})")
    return files


def _wait_until(
    files: DeploymentFiles, ends: tuple[str, ...], wait_s: float, *, want: str
) -> ExitCode:
    started = time.monotonic()
    deadline = started + wait_s
    shown = ""
    while time.monotonic() < deadline:
        state = files.state()
        if state.message and state.message != shown and state.state not in ends:
            click.echo(f"  {state.state}: {state.message}", err=True)
            shown = state.message
        if state.state in ends:
            detail = f": {state.message}" if state.message else ""
            click.echo(f"{files.name} {state.state}{detail}")
            return ExitCode.OK if state.state == want else ExitCode.FAILED
        if time.monotonic() - started > REVIVE_AFTER_S and not files.alive():
            files.ensure()  # it died (or the master rebooted): another picks up
        time.sleep(POLL_S)
    click.echo(
        f"{files.name} is still {files.state().state} after {wait_s:.0f}s; "
        f"`ugro serve status {files.name}` follows it",
        err=True,
    )
    return ExitCode.FAILED
