"""`ugro launch`: train across the cluster, follow the job until it ends, report how it went."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from typing import Any

import click

from ugro.commands.context import Context
from ugro.controller.follow import follow
from ugro.core.cluster import Cluster
from ugro.core.errors import ExitCode, UsageError
from ugro.core.files import read_json_dict
from ugro.core.layout import PLAN_FILE, check_job_ref, check_name, name_of
from ugro.launch import definition, start, through_slurm
from ugro.launch.balance import choose_mode, plan_lines
from ugro.launch.definition import LaunchRequest
from ugro.records.controller_files import ControllerHandle, ControllerOptions
from ugro.records.history import JobRecord, Jobs
from ugro.results.summary import job_results


def launch(
    ctx: Context,
    *,
    name: str | None,
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
    retries: int | None = None,
    min_nodes: int | None = None,
    hang_timeout: float | None = None,
    force: bool = False,
    resume_job: str | None = None,
    balance: str | None = None,
    scheduler: str | None = None,
) -> ExitCode:
    # rich, only to draw for a person (`--json` and scripts go without it).
    from ugro.display.progress import RunProgress

    if (name is None) == (resume_job is None):
        raise UsageError("give --name NAME for a new job, or --resume JOB to continue one")
    # Bad input is refused before anything is read or written.
    check_job_ref(resume_job) if resume_job is not None else check_name(str(name))
    cluster = ctx.cluster()
    options = controller_options(
        cluster, retries=retries, min_nodes=min_nodes, hang_timeout=hang_timeout, nodes=nodes
    )
    node_count = len(nodes) or len(cluster.nodes)
    if resume_job is not None:
        given = (script, *script_args, balance, model, dataset, epochs, lr, scheduler)
        if any(v not in (None, "") for v in given):
            raise UsageError("--resume continues a job as it was launched; give no script options")
        if dry_run:
            raise UsageError("--resume has no dry run; `ugro results JOB` shows its checkpoints")
        with RunProgress("resume", node_count) as progress:
            result = start.resume(
                cluster, resume_job, options=options, nodes=nodes, on_event=progress
            )
        if isinstance(result, start.Submitted):
            click.echo(submitted_line(result, "Resumed"))
        else:
            click.echo(f"Resumed {result.job_id} on {', '.join(result.nodes)}.")
        return _follow_or_detach(ctx, result.job_id, detach=detach, verbose=verbose)
    assert name is not None
    request = launch_request(
        cluster,
        name=name,
        seed_options={"--model": model, "--dataset": dataset, "--epochs": epochs, "--lr": lr},
        script=script,
        script_args=script_args,
        nodes=nodes,
        allow_drift=allow_drift,
        force=force,
        extravars=extravars,
        balance=balance,
        scheduler=scheduler,
    )
    if request.scheduler_on(cluster) == through_slurm.SLURM and not dry_run:
        submitted = start.to_slurm(cluster, request, options=options)
        click.echo(submitted_line(submitted, "Launched"))
        return _follow_or_detach(ctx, submitted.job_id, detach=detach, verbose=verbose)
    with RunProgress("launch (dry run)" if dry_run else "launch", node_count) as progress:
        result = start.launch(cluster, request, dry_run=dry_run, on_event=progress, options=options)
    if dry_run:
        click.echo(f"Dry run of {result.job_id}: nothing was started. Each node would run:")
        for node in result.nodes:
            click.echo(f"  {node}: {shlex.join(result.commands.get(node, []))}")
        return ExitCode.OK
    click.echo(f"Launched {result.job_id} on {', '.join(result.nodes)}.")
    return _follow_or_detach(ctx, result.job_id, detach=detach, verbose=verbose)


def submitted_line(submitted: start.Submitted, verb: str) -> str:
    """What a launch, resume or submit through Slurm says: UGRO's job, Slurm's, and what it
    waits for."""
    wants = (
        ", ".join(submitted.nodes)
        if submitted.nodes
        else f"any {submitted.count} node{'s' if submitted.count > 1 else ''}"
    )
    return (
        f"{verb} {submitted.job_id} through Slurm (job {submitted.slurm_job}): it starts on "
        f"{wants} when Slurm allocates them."
    )


def controller_options(
    cluster: Cluster,
    *,
    retries: int | None,
    min_nodes: int | None,
    hang_timeout: float | None,
    nodes: tuple[str, ...] = (),
    node_count: int | None = None,
) -> ControllerOptions:
    """What the job's controller is asked to do (the launch's and the submit's options)."""

    count = node_count or len(nodes) or len(cluster.nodes)
    if min_nodes is not None and min_nodes > count:
        raise UsageError(f"--min-nodes {min_nodes}: the job has only {count} nodes")
    return ControllerOptions(
        retries=cluster.launch.retries if retries is None else retries,
        backoff_s=cluster.launch.retry_backoff_s,
        min_nodes=min_nodes,
        hang_timeout=hang_timeout,
    )


def launch_request(
    cluster: Cluster,
    *,
    name: str,
    seed_options: Mapping[str, Any],
    script: str | None,
    script_args: tuple[str, ...],
    nodes: tuple[str, ...] = (),
    allow_drift: bool = False,
    force: bool = False,
    extravars: Mapping[str, Any] | None = None,
    balance: str | None = None,
    scheduler: str | None = None,
) -> LaunchRequest:
    """The job as `ugro launch` and `ugro submit` take it: train_production.py with the
    cluster's training section and the seed's options, or the user's script with its own."""

    if script and any(v is not None for v in seed_options.values()):
        raise UsageError(
            "--model/--dataset/--epochs/--lr are train_production.py's options; "
            "pass your script's own options after --"
        )
    dataset, data_files = definition.shipped_dataset(seed_options.get("--dataset"))
    args = (
        tuple(script_args)
        if script
        else definition.training_args(
            cluster, overrides={**seed_options, "--dataset": dataset}, extra=tuple(script_args)
        )
    )
    return definition.LaunchRequest(
        name=name,
        script=script or definition.DEFAULT_SCRIPT,
        args=args,
        nodes=nodes,
        allow_drift=allow_drift,
        force=force,
        extravars=dict(extravars or {}),
        balance=choose_mode(cluster, nodes, balance, own_script=bool(script)),
        hf_token=os.environ.get("HF_TOKEN") or None,
        data_files=data_files,
        scheduler=scheduler or "",
    )


def _follow_or_detach(ctx: Context, job_id: str, *, detach: bool, verbose: bool) -> ExitCode:
    # rich, only to draw for a person (`--json` and scripts go without it).
    from ugro.display.console import console
    from ugro.display.jobs import results_table
    from ugro.display.progress import TrainingProgress

    cluster = ctx.cluster()
    name = name_of(job_id)
    if detach:
        click.echo(
            f"Its controller watches it. Follow it with `ugro logs {name} --follow`; "
            f"stop it with `ugro stop {name}`."
        )
        return ExitCode.OK
    plan_file = Jobs(cluster).experiment_dir(job_id) / PLAN_FILE
    try:
        with TrainingProgress(job_id, verbose=verbose) as progress:
            shown = False

            def show_plan() -> None:
                # The ranks write the split once they have probed (the lead's, on the master).
                nonlocal shown
                if not shown and plan_file.is_file():
                    lines = plan_lines(read_json_dict(plan_file))
                    shown = bool(lines)
                    progress.notice(lines)

            record = follow(
                cluster,
                job_id,
                on_metrics=progress,
                on_status=progress.status,
                on_poll=show_plan,
            )
    except KeyboardInterrupt:
        click.echo(
            f"\nDetached from {job_id}; its controller keeps watching it. "
            f"Follow again with `ugro logs {name} --follow`, stop it with `ugro stop {name}`."
        )
        return ExitCode.OK
    jobs = Jobs(cluster)
    if record.active:
        log_path = ControllerHandle(jobs.experiment_dir(job_id)).log_path
        click.echo(
            f"{job_id} is {record.state}, but its controller keeps dying; see {log_path}",
            err=True,
        )
        return ExitCode.FAILED
    console.print(results_table(job_results(jobs, record)))
    if record.state == "succeeded":
        return ExitCode.OK
    for line in failure_report(record):
        click.echo(line, err=True)
    return ExitCode.FAILED


def failure_report(record: JobRecord) -> list[str]:
    """How a job ended when it did not succeed: the node, rank and cause that came first, and
    the last lines of that rank's (or agent's) log."""
    attempt = f" (attempt {record.attempt})" if record.attempt > 1 else ""
    failure = record.detail.get("failure")
    if not failure:
        reason = record.detail.get("reason")
        return [f"{record.job_id} {record.state}{attempt}" + (f": {reason}" if reason else "")]
    where = str(failure.get("node", "?"))
    if failure.get("rank") is not None:
        where += f" rank {failure['rank']}"
    cause = str(failure.get("reason") or failure.get("cause") or "?")
    if "reason" not in failure and "exit_code" in failure:
        cause = f"exit {failure['exit_code']}"
    lines = [
        f"{record.job_id} {record.state}{attempt} on {where}: {cause}"
        + ("; last lines of its log:" if failure.get("tail") else "")
    ]
    lines += [f"  {line}" for line in failure.get("tail") or []]
    for event in record.detail.get("events", []):
        if event.get("event") == "not_retried":
            lines.append(f"not retried: {event.get('reason')}")
    return lines
