"""`ugro launch`: train across the cluster, follow the job until it ends, report how it went."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from typing import Any

import click

from ugro.commands.context import Context
from ugro.errors import ExitCode, UsageError
from ugro.jobs import JobRecord


def launch(
    ctx: Context,
    *,
    name: str,
    model: str | None = None,
    dataset: str | None = None,
    epochs: float | None = None,
    lr: float | None = None,
    script: str | None = None,
    nodes: tuple[str, ...] = (),
    detach: bool = False,
    dry_run: bool = False,
    allow_drift: bool = False,
    verbose: bool = False,
    script_args: tuple[str, ...] = (),
    extravars: Mapping[str, Any] | None = None,
) -> ExitCode:
    from ugro import launch as launcher
    from ugro.display import RunProgress, TrainingProgress, console, results_table
    from ugro.follow import follow
    from ugro.joblayout import check_name
    from ugro.jobs import Jobs, job_results

    check_name(name)
    cluster = ctx.cluster()
    seed_options = {"--model": model, "--dataset": dataset, "--epochs": epochs, "--lr": lr}
    if script and any(v is not None for v in seed_options.values()):
        raise UsageError(
            "--model/--dataset/--epochs/--lr are train_production.py's options; "
            "pass your script's own options after --"
        )
    args = (
        tuple(script_args)
        if script
        else launcher.training_args(cluster, overrides=seed_options, extra=tuple(script_args))
    )
    request = launcher.LaunchRequest(
        name=name,
        script=script or launcher.DEFAULT_SCRIPT,
        args=args,
        nodes=nodes,
        allow_drift=allow_drift,
        extravars=dict(extravars or {}),
        hf_token=os.environ.get("HF_TOKEN") or None,
    )
    node_count = len(nodes) or len(cluster.nodes)
    with RunProgress("launch (dry run)" if dry_run else "launch", node_count) as progress:
        result = launcher.launch(cluster, request, dry_run=dry_run, on_event=progress)
    if dry_run:
        click.echo(f"Dry run of {result.job_id}: nothing was started. Each node would run:")
        for node in result.nodes:
            click.echo(f"  {node}: {shlex.join(result.commands.get(node, []))}")
        return ExitCode.OK
    click.echo(f"Launched {result.job_id} on {', '.join(result.nodes)}.")
    if detach:
        click.echo(f"Follow it with `ugro logs {name} --follow`; stop it with `ugro stop {name}`.")
        return ExitCode.OK
    try:
        with TrainingProgress(result.job_id, verbose=verbose) as progress:
            record = follow(cluster, result.job_id, on_metrics=progress)
    except KeyboardInterrupt:
        click.echo(
            f"\nDetached from {result.job_id}; it keeps running. "
            f"Follow again with `ugro logs {name} --follow`, stop it with `ugro stop {name}`."
        )
        return ExitCode.OK
    console.print(results_table(job_results(Jobs(cluster), record)))
    if record.state == "succeeded":
        return ExitCode.OK
    for line in failure_report(record):
        click.echo(line, err=True)
    return ExitCode.FAILED


def failure_report(record: JobRecord) -> list[str]:
    """Where a job failed and the last lines of that rank's (or agent's) log."""
    failure = record.detail.get("failure")
    if not failure:
        reason = record.detail.get("reason")
        return [f"{record.job_id} {record.state}" + (f": {reason}" if reason else "")]
    where = str(failure.get("node", "?"))
    if "rank" in failure:
        where += f" rank {failure['rank']}"
    if "exit_code" in failure:
        cause = f"exit {failure['exit_code']}"
    else:
        cause = str(failure.get("reason", "?"))
    lines = [
        f"{record.job_id} failed on {where} ({cause})"
        + ("; last lines of its log:" if failure.get("tail") else "")
    ]
    lines += [f"  {line}" for line in failure.get("tail") or []]
    return lines
