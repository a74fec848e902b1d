"""One attempt of a job started on its nodes: the network preflight, then the launch playbook.

The job is already recorded as `launching` (by a launch, a resume, the daemon's dispatch or a
retry); this runs playbooks/launch.yml: a health preflight on every node, the launch role's
refusals (ugro.launch.refusals), then the role writes the job's code and start scripts into the
job directory on each node and starts its torchrun agent detached (on an allocation of Slurm's,
it writes them and releases the batch script, which starts them: ugro.launch.through_slurm).
It records `running`, or `failed` with the reason, stopping whatever did start.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ugro.core.cluster import Cluster
from ugro.core.errors import RunError, UgroError, UsageError
from ugro.health.fresh_reports import known_reports
from ugro.launch import through_slurm
from ugro.launch.definition import JobScript, LaunchRequest, code_files, lead_of, ranks_per_node
from ugro.launch.job_playbooks import stop_quietly
from ugro.network.check import preflight as network_preflight
from ugro.nodes.runner import EventCallback, RunResult, run_playbook
from ugro.records.deployments import serving_nodes
from ugro.records.history import Jobs, now_iso

log = logging.getLogger(__name__)

# In the environment of a launch's Ansible run: if the process that started it dies, the job's
# controller finds the run by it and ends it before cleaning up (ugro.controller.orphans).
LAUNCH_TAG = "UGRO_LAUNCH_OF"
_LAUNCH_LOCK_WAIT_S = 300.0
# Extra variables a launch sets itself; `ugro run launch -e` may not override them.
OWN_VARIABLES = frozenset(
    {
        "ugro_job_id",
        "ugro_launch_script",
        "ugro_launch_args",
        "ugro_launch_allow_drift",
        "ugro_launch_force",
        "ugro_launch_balance",
        "ugro_launch_interfaces",
        "ugro_launch_attempt",
        "ugro_launch_lead",
        "ugro_health_known_reports",
        "ugro_launch_code_file",
        "ugro_launch_secret_file",
        "ugro_launch_data_files",
        "ugro_launch_start",
    }
)


@dataclass
class LaunchResult:
    job_id: str
    nodes: list[str]
    commands: dict[str, list[str]]
    pids: dict[str, int]
    run: RunResult


def check_extravars(request: LaunchRequest) -> None:
    clashing = sorted(OWN_VARIABLES & set(request.extravars))
    if clashing:
        raise UsageError(f"-e {clashing[0]}: set by the launch itself; use the launch's options")


def preview(
    cluster: Cluster,
    request: LaunchRequest,
    job_id: str,
    nodes: list[str],
    *,
    on_event: EventCallback | None = None,
) -> LaunchResult:
    """The launch playbook in check mode: each node's command, nothing started or written."""
    script = JobScript.choose(request.script)
    with staged_files(code_files(cluster, script), None) as staged:
        result = run_playbook(
            cluster,
            "launch",
            extravars={**attempt_vars(request, job_id, script, request.args, 1, nodes), **staged},
            limit=nodes,
            check=True,
            on_event=on_event,
        )
    result.raise_for_status()
    return LaunchResult(job_id, nodes, result.facts("ugro_launch_command"), {}, result)


def start_attempt(
    cluster: Cluster,
    job_id: str,
    request: LaunchRequest,
    *,
    attempt: int,
    nodes: list[str],
    args: tuple[str, ...],
    on_event: EventCallback | None = None,
    slurm: through_slurm.Allocation | None = None,
) -> LaunchResult:
    """Run the launch playbook for one attempt of a job already recorded as `launching`;
    record `running`, or `failed` with the reason (stopping whatever did start). With `slurm`
    (the nodes Slurm allocated to it), nothing is started but by Slurm, once released."""
    jobs = Jobs(cluster)
    script = JobScript.choose(request.script)
    code = code_files(cluster, script)
    extravars = attempt_vars(request, job_id, script, args, attempt, nodes, serving_nodes(cluster))
    log.info(
        "launching %s (attempt %d) on %s: %s %s",
        job_id,
        attempt,
        ", ".join(nodes),
        request.script,
        " ".join(args),
    )
    if slurm is not None:
        extravars["ugro_launch_start"] = False  # Slurm starts each node's supervisor
    with launch_lock(cluster), staged_files(code, request.hf_token) as staged:
        # Under the lock: a check beside another launch's would contend for its ports.
        extravars["ugro_launch_interfaces"], refusal = network_preflight(cluster, nodes)
        if refusal is not None:
            reason = f"the network: {refusal}"
            jobs.record(job_id, "failed", attempt=attempt, reason=reason, ended_at=now_iso())
            raise UgroError(f"launch of {job_id} refused: {reason}")

        # With the daemon running, nodes it saw healthy within two probe intervals need no
        # probe (under the lock: the lead's free port and the jobs on each node are read now).
        extravars["ugro_health_known_reports"] = known_reports(
            cluster, nodes, lead_of(nodes), job_id
        )
        result = run_playbook(
            cluster,
            "launch",
            extravars={**extravars, **staged},
            limit=nodes,
            on_event=on_event,
            tag={LAUNCH_TAG: job_id},
        )
    commands = result.facts("ugro_launch_command")
    pids = {k: int(v) for k, v in result.facts("ugro_launch_pid").items()}
    _record_launch(jobs, job_id, result, commands, pids, attempt=attempt, nodes=nodes, args=args)
    if not result.successful:
        # Whatever did start must not be left running; a node may have started before another
        # failed, without its pid being recorded, so every node is asked.
        stop_quietly(cluster, job_id, nodes)
        reason = _first_failure(result)
        jobs.record(job_id, "failed", attempt=attempt, reason=reason, ended_at=now_iso())
        log.info("launch of %s failed: %s", job_id, reason)
        raise RunError(
            f"launch of {job_id} failed: {reason} (log: {result.stdout_path})",
            status=result.status,
            rc=result.rc,
            artifact_dir=result.artifact_dir,
        )
    if slurm is not None:
        try:
            through_slurm.release(cluster, job_id, slurm)
        except UgroError as exc:
            stop_quietly(cluster, job_id, nodes)
            jobs.record(job_id, "failed", attempt=attempt, reason=exc.message, ended_at=now_iso())
            raise
        log.info("%s (attempt %d): Slurm's job %s starts it", job_id, attempt, slurm.slurm_id)
    jobs.record(job_id, "running", attempt=attempt, pids=pids)
    for node, command in commands.items():
        started = "Slurm starts it" if slurm else f"pid {pids.get(node)}"
        log.info("%s on %s (%s): %s", job_id, node, started, " ".join(command))
    log.info("launched %s (attempt %d) into %s", job_id, attempt, jobs.experiment_dir(job_id))
    return LaunchResult(job_id, nodes, commands, pids, result)


def _record_launch(
    jobs: Jobs,
    job_id: str,
    result: RunResult,
    commands: dict[str, list[str]],
    pids: dict[str, int],
    *,
    attempt: int,
    nodes: list[str],
    args: tuple[str, ...],
) -> None:
    """config.json gains what the attempt ran: commands, pids, the environments' fingerprints."""
    config = replace(
        jobs.config(job_id),
        commands=commands,
        pids=pids,
        rendezvous_port=result.facts("ugro_launch_port").get(lead_of(nodes)),
        fingerprints={
            name: _fingerprint(report)
            for name, report in result.facts("ugro_health_report").items()
        },
        launch_run=str(result.run_dir),
    )
    if not config.ranks_per_node:
        # The job as it began: what a retry on fewer nodes keeps its global batch against.
        config = replace(config, ranks_per_node=ranks_per_node(commands))
    if attempt > 1:
        config = config.with_attempt(attempt, nodes, args)
    jobs.write_config(config)


def attempt_vars(
    request: LaunchRequest,
    job_id: str,
    script: JobScript,
    args: tuple[str, ...],
    attempt: int,
    nodes: list[str],
    serving: Mapping[str, list[str]] | None = None,
) -> dict[str, Any]:
    """The launch role's variables for one attempt (`serving`: the nodes that serve a
    deployment, from the master's records, which the refusals name)."""
    serving = {node: list(names) for node, names in (serving or {}).items() if node in nodes}
    return {
        **request.extravars,
        "ugro_job_id": job_id,
        "ugro_launch_script": script.code_name,
        "ugro_launch_args": list(args),
        "ugro_launch_allow_drift": request.allow_drift,
        "ugro_launch_force": request.force,
        "ugro_launch_balance": request.balance,
        "ugro_launch_attempt": attempt,
        "ugro_launch_lead": lead_of(nodes),
        "ugro_launch_data_files": list(request.data_files),
        "ugro_launch_serving": serving,
    }


@contextmanager
def staged_files(code: list[dict[str, str]], token: str | None) -> Iterator[dict[str, str]]:
    """The job's code list and the token, each in a file only this user can read, for the
    launch role to read on the master; both removed as soon as the launch is done."""
    paths: list[str] = []

    def stage(prefix: str, text: str) -> str:
        fd, path = tempfile.mkstemp(prefix=prefix)
        paths.append(path)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        return path

    try:
        yield {
            "ugro_launch_code_file": stage("ugro-code-", json.dumps(code)),
            "ugro_launch_secret_file": stage("ugro-secret-", token) if token else "",
        }
    finally:
        for path in paths:
            Path(path).unlink(missing_ok=True)


@contextmanager
def launch_lock(cluster: Cluster) -> Iterator[None]:
    """One launch at a time on this master, from the preflight to the started agents: a second
    launch then sees the first's processes (and port) instead of racing it for them."""
    path = cluster.paths.data / "launch.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(path), timeout=_LAUNCH_LOCK_WAIT_S):
            yield
    except Timeout:
        raise UsageError(
            f"another launch on {cluster.name} has held {path} for {_LAUNCH_LOCK_WAIT_S:.0f}s; "
            "try again when it is done"
        ) from None


def _fingerprint(report: dict[str, Any]) -> dict[str, Any]:
    env = report.get("env") or {}
    return {
        "python": env.get("python_version"),
        "torch": env.get("torch_version"),
        "cuda": env.get("cuda_build"),
        "nccl": env.get("nccl_version"),
        "lock_hash": report.get("lock_hash"),
        "gpus": [g.get("name") for g in report.get("gpus") or []],
    }


def _first_failure(result: RunResult) -> str:
    for outcome in result.hosts.values():
        if outcome.failed or outcome.unreachable:
            kind = "unreachable" if outcome.unreachable else "failed"
            return f"{outcome.name} {kind}: {outcome.message}"
    return f"playbook {result.status} (rc={result.rc})"
