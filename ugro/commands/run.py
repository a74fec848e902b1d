"""`ugro run PLAYBOOK [JOB]`: any playbook against the cluster; ugro's own take their verb's path.

`ugro run launch exp1 -e k=v` is `ugro launch --name exp1` with those extra variables, `ugro run
stop exp1` is `ugro stop exp1` (history included), and so on: a job needs an id, a directory
and a history, not only a playbook run. Other playbooks (the status playbook, your own) run as
they are, with the job's id and directory filled in when a JOB is named.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from ugro.commands import stop as job_verbs
from ugro.commands.context import Context
from ugro.commands.health import health
from ugro.commands.launch import launch
from ugro.commands.reset import reset
from ugro.commands.sync import sync
from ugro.core.errors import ExitCode, UsageError
from ugro.core.layout import check_job_ref
from ugro.launch.job_playbooks import job_extravars
from ugro.nodes import assets
from ugro.records.history import Jobs

_EXTRA_VAR = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)
# ugro's playbooks that work on one job, and so need a JOB.
_JOB_PLAYBOOKS = ("launch", "stop", "collect", "status")


def parse_extra_vars(pairs: tuple[str, ...]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for pair in pairs:
        match = _EXTRA_VAR.fullmatch(pair)
        if not match:
            raise UsageError(f"-e {pair!r}: expected key=value with a key like batch_size")
        extra[match.group(1)] = match.group(2)
    return extra


def run(
    ctx: Context,
    *,
    playbook: str,
    job: str | None,
    extra: tuple[str, ...] = (),
    nodes: tuple[str, ...] = (),
    check: bool = False,
) -> ExitCode:
    extravars = parse_extra_vars(extra)
    if job is not None:
        check_job_ref(job)
    # An unknown playbook is a usage error before anything runs.
    path = assets.playbook_path(playbook)
    own = path.parent == assets.project_dir() / "playbooks"
    verb = path.stem if own else None
    if verb in _JOB_PLAYBOOKS and job is None:
        raise UsageError(f"ugro run {verb} needs a JOB (a job's name or id)")
    if verb == "launch":
        assert job is not None
        return launch(ctx, name=job, nodes=nodes, dry_run=check, extravars=extravars)
    if verb == "health":
        return health(ctx, nodes=nodes, check=check, extravars=extravars)
    if verb == "sync":
        return sync(ctx, nodes=nodes, check=check, extravars=extravars)
    if verb == "reset" and not check:
        return reset(ctx, nodes=nodes)
    if verb in ("stop", "collect") and not check and not nodes:
        assert job is not None
        return (job_verbs.stop if verb == "stop" else job_verbs.collect)(
            ctx, job=job, extravars=extravars
        )
    return _run_playbook(ctx, path, job=job, extravars=extravars, nodes=nodes, check=check)


def _run_playbook(
    ctx: Context,
    path: Path,
    *,
    job: str | None,
    extravars: dict[str, Any],
    nodes: tuple[str, ...],
    check: bool,
) -> ExitCode:
    cluster = ctx.cluster()
    if job is not None:
        jobs = Jobs(cluster)
        record = jobs.find(job)
        extravars = {**job_extravars(cluster, record.job_id), **extravars}
        nodes = nodes or tuple(jobs.nodes(record))
        extravars.setdefault("ugro_job_name", record.name)
    result = ctx.run_playbook(str(path), nodes=nodes, extravars=extravars, check=check)
    for outcome in sorted(result.hosts.values(), key=lambda h: h.name):
        verdict = "unreachable" if outcome.unreachable else "failed" if outcome.failed else "ok"
        detail = f": {outcome.message}" if outcome.message and verdict != "ok" else ""
        click.echo(f"{outcome.name}: {verdict} (ok={outcome.ok} changed={outcome.changed}){detail}")
    click.echo(f"artifacts: {result.artifact_dir}")
    result.raise_for_status()
    return ExitCode.OK
