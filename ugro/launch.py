"""Running jobs across the cluster: launch, follow, stop, collect, and their live state.

Each step is one playbook through ugro.runner (launch.yml, status.yml, stop.yml, collect.yml);
this module decides what to run and what it means, and keeps the job's history on the master.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ugro import assets
from ugro.errors import RunError, UgroError, UsageError
from ugro.jobs import JobRecord, Jobs, git_commit, new_job_id, now_iso, read_metrics
from ugro.resolved import ResolvedCluster
from ugro.runner import EventCallback, RunResult, run_playbook

log = logging.getLogger(__name__)

DEFAULT_SCRIPT = "train_production.py"
_SCRIPT_NAME = re.compile(r"[A-Za-z0-9_.-]+\.py")


@dataclass(frozen=True)
class LaunchRequest:
    name: str
    script: str = DEFAULT_SCRIPT
    args: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    allow_drift: bool = False
    # The Hugging Face token's value: it only ever becomes a 0600 file (see _secret_file).
    hf_token: str | None = field(default=None, repr=False)


@dataclass
class LaunchResult:
    job_id: str
    nodes: list[str]
    commands: dict[str, list[str]]
    pids: dict[str, int]
    run: RunResult


def training_args(
    cluster: ResolvedCluster,
    *,
    overrides: dict[str, Any] | None = None,
    extra: tuple[str, ...] = (),
) -> tuple[str, ...]:
    """Options for train_production.py: cluster.yaml's training section, then the command line's
    (`overrides`, keyed by option), then anything after `--`."""
    values: dict[str, Any] = dict(cluster.training_options)
    values.update({flag: value for flag, value in (overrides or {}).items() if value is not None})
    args: list[str] = []
    for flag, value in values.items():
        args += [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return (*args, *extra)


def _script_vars(script: str) -> dict[str, str]:
    """A script under scripts/ (synced to every node), or a master's file shipped with the job."""
    scripts = assets.project_dir() / "scripts"
    candidate = (scripts / script).resolve()
    if candidate.is_file() and candidate.is_relative_to(scripts.resolve()):
        relative = str(candidate.relative_to(scripts.resolve()))
        if not re.fullmatch(r"[A-Za-z0-9_./-]+", relative):
            raise UsageError(f"--script {script}: use letters, digits, '_', '.', '-' in its name")
        return {"ugro_launch_script": relative, "ugro_launch_script_src": ""}
    path = Path(script).expanduser()
    if not path.is_file():
        raise UsageError(f"--script {script}: no such file (on the master, or under {scripts})")
    if not _SCRIPT_NAME.fullmatch(path.name):
        raise UsageError(
            f"--script {script}: expected a .py file named with letters, digits, '_.-'"
        )
    return {"ugro_launch_script": path.name, "ugro_launch_script_src": str(path.resolve())}


def _job_nodes(cluster: ResolvedCluster, nodes: tuple[str, ...]) -> list[str]:
    if not nodes:
        return cluster.node_names
    chosen = [cluster.check_node(name) for name in nodes]
    if cluster.master_name not in chosen:
        raise UsageError(
            f"--nodes {','.join(nodes)}: the master ({cluster.master_name}) must take part; "
            "it hosts the rendezvous and receives the results"
        )
    return [name for name in cluster.node_names if name in chosen]


@contextmanager
def _secret_file(value: str | None) -> Iterator[str]:
    """The token in a file only this user can read, removed as soon as the launch is done."""
    if not value:
        yield ""
        return
    fd, path = tempfile.mkstemp(prefix="ugro-secret-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(value)
        yield path
    finally:
        Path(path).unlink(missing_ok=True)


def launch(
    cluster: ResolvedCluster,
    request: LaunchRequest,
    *,
    dry_run: bool = False,
    on_event: EventCallback | None = None,
) -> LaunchResult:
    """Start a job on its nodes (or, with dry_run, only show what each would run)."""
    jobs = Jobs(cluster)
    job_id = new_job_id(request.name)
    nodes = _job_nodes(cluster, request.nodes)
    script = _script_vars(request.script)
    extravars: dict[str, Any] = {
        "ugro_job_id": job_id,
        **script,
        "ugro_launch_args": list(request.args),
        "ugro_launch_allow_drift": request.allow_drift,
        "ugro_launch_max_restarts": cluster.max_restarts,
    }
    if dry_run:
        result = run_playbook(
            cluster, "launch", extravars=extravars, limit=nodes, check=True, on_event=on_event
        )
        result.raise_for_status()
        return LaunchResult(job_id, nodes, _facts(result, "ugro_launch_command"), {}, result)

    directory = jobs.create(job_id)
    config = {
        "job_id": job_id,
        "name": request.name,
        "created_at": now_iso(),
        "nodes": nodes,
        "script": request.script,
        "args": list(request.args),
        "allow_drift": request.allow_drift,
        "git_commit": git_commit(assets.project_dir()),
        "cluster": cluster.document,
        "cluster_file": str(cluster.source) if cluster.source else None,
    }
    jobs.write_config(job_id, config)
    jobs.record(job_id, "launching", nodes=nodes)
    log.info(
        "launching %s on %s: %s %s",
        job_id,
        ", ".join(nodes),
        request.script,
        " ".join(request.args),
    )
    with _secret_file(request.hf_token) as secret:
        extravars["ugro_launch_secret_file"] = secret
        result = run_playbook(
            cluster, "launch", extravars=extravars, limit=nodes, run_dir=None, on_event=on_event
        )
    commands = _facts(result, "ugro_launch_command")
    pids = {k: int(v) for k, v in _facts(result, "ugro_launch_pid").items()}
    config.update(
        commands=commands,
        pids=pids,
        rendezvous_port=_facts(result, "ugro_launch_port").get(cluster.master_name),
        fingerprints={
            name: _fingerprint(report)
            for name, report in _facts(result, "ugro_health_report").items()
        },
        launch_run=str(result.run_dir),
    )
    jobs.write_config(job_id, config)
    if not result.successful:
        # Whatever did start must not be left running; a node may have started before another
        # failed, without its pid being recorded, so every node is asked.
        _stop_quietly(cluster, job_id, nodes)
        reason = _first_failure(result)
        jobs.record(job_id, "failed", reason=reason)
        log.info("launch of %s failed: %s", job_id, reason)
        raise RunError(
            f"launch of {job_id} failed: {reason} (log: {result.stdout_path})",
            status=result.status,
            rc=result.rc,
            artifact_dir=result.artifact_dir,
        )
    jobs.record(job_id, "running", pids=pids)
    for node, command in commands.items():
        log.info("%s on %s (pid %s): %s", job_id, node, pids.get(node), " ".join(command))
    log.info("launched %s into %s", job_id, directory)
    return LaunchResult(job_id, nodes, commands, pids, result)


def _facts(result: RunResult, name: str) -> dict[str, Any]:
    return {host: o.facts[name] for host, o in result.hosts.items() if name in o.facts}


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


# --- live state, stop, collect ------------------------------------------------------------------


def live_state(
    cluster: ResolvedCluster, job_id: str, nodes: list[str]
) -> dict[str, dict[str, Any]]:
    """Each node's view of the job: processes, pid, exit codes, failed ranks' log tails."""
    result = run_playbook(cluster, "status", extravars={"ugro_job_id": job_id}, limit=nodes)
    states = _facts(result, "ugro_job_state")
    for name in nodes:
        if name not in states:
            outcome = result.hosts.get(name)
            states[name] = {
                "unreachable": True,
                "message": outcome.message if outcome else "not reached",
            }
    return states


def stop(cluster: ResolvedCluster, job_id: str, nodes: list[str]) -> dict[str, dict[str, Any]]:
    """Stop every process of the job on every node; fails if any survives."""
    log.info("stopping %s on %s", job_id, ", ".join(nodes))
    result = run_playbook(cluster, "stop", extravars={"ugro_job_id": job_id}, limit=nodes)
    result.raise_for_status()
    return _facts(result, "ugro_job_state")


def _stop_quietly(cluster: ResolvedCluster, job_id: str, nodes: list[str]) -> None:
    """Stop on the way out of a failure: a node that cannot be reached must not hide the failure."""
    try:
        stop(cluster, job_id, nodes)
    except UgroError as exc:
        log.warning("stopping %s after a failure: %s", job_id, exc.message)


def collect(cluster: ResolvedCluster, job_id: str, nodes: list[str]) -> RunResult:
    destination = Jobs(cluster).experiment_dir(job_id)
    extravars = {"ugro_job_id": job_id, "ugro_collect_dest": str(destination)}
    return run_playbook(cluster, "collect", extravars=extravars, limit=nodes).raise_for_status()


@dataclass
class Verdict:
    """What the nodes' states say about a job."""

    state: str  # running | succeeded | failed
    failure: dict[str, Any] | None = None


def judge(states: dict[str, dict[str, Any]]) -> Verdict:
    failures = []
    for node, state in states.items():
        if state.get("unreachable"):
            failures.append({"node": node, "reason": f"unreachable: {state.get('message')}"})
            continue
        for rank, info in (state.get("ranks") or {}).items():
            if info.get("exit_code"):
                failures.append(
                    {
                        "node": node,
                        "rank": int(rank),
                        "exit_code": info["exit_code"],
                        "tail": info.get("tail") or [],
                    }
                )
        if state.get("exit_code") not in (None, 0) and not any(f["node"] == node for f in failures):
            failures.append(
                {
                    "node": node,
                    "exit_code": state["exit_code"],
                    "tail": state.get("agent_tail") or [],
                }
            )
    if failures:
        return Verdict("failed", min(failures, key=lambda f: f.get("rank", 1 << 30)))
    if all(s.get("exit_code") == 0 and not s.get("running") for s in states.values()):
        return Verdict("succeeded")
    return Verdict("running")


def finish(cluster: ResolvedCluster, record: JobRecord, verdict: Verdict) -> None:
    """A job has ended (or failed on some node): stop what is left, collect, record."""
    jobs = Jobs(cluster)
    nodes = jobs.nodes(record)
    if verdict.state == "failed":
        _stop_quietly(cluster, record.job_id, nodes)
    try:
        collect(cluster, record.job_id, nodes)
    except UgroError as exc:
        log.warning("collecting %s: %s", record.job_id, exc.message)
    detail = {"failure": verdict.failure} if verdict.failure else {}
    jobs.record(record.job_id, verdict.state, **detail)
    log.info("%s %s %s", record.job_id, verdict.state, verdict.failure or "")


def refresh(cluster: ResolvedCluster, record: JobRecord) -> JobRecord:
    """Bring a job's recorded state up to date with the nodes (for status, results, logs)."""
    if record.state not in ("launching", "running"):
        return record
    verdict = judge(live_state(cluster, record.job_id, Jobs(cluster).nodes(record)))
    if verdict.state != "running":
        finish(cluster, record, verdict)
    return Jobs(cluster).resolve(record.job_id)


def _master_job_dir(cluster: ResolvedCluster, job_id: str) -> Path:
    return Path(cluster.project_path(cluster.master_name)) / "data" / "experiments" / job_id


def follow(
    cluster: ResolvedCluster,
    job_id: str,
    *,
    on_metrics: Callable[[dict[str, Any]], None],
    check_every: float = 20.0,
    poll: float = 0.5,
) -> JobRecord:
    """Watch a job until it ends: metrics as they come, the nodes' states now and then.

    Asking the nodes is an Ansible run, which on a small master competes with the job's own ranks
    for the CPU (measured in bench/: every 5 s it delayed the first step by seconds). So the loop
    watches the master's own job directory, which is local and free to read, and asks the nodes
    only when the master's agent has exited (a worker's failure ends it too, through the
    rendezvous) and every `check_every` seconds as a fallback.
    """
    jobs = Jobs(cluster)
    metrics = jobs.experiment_dir(job_id) / "metrics.jsonl"
    master_exit = _master_job_dir(cluster, job_id) / "exit_code"
    seen = 0
    asked_after_end = False
    next_check = time.monotonic() + check_every
    while True:
        records = read_metrics(metrics)
        for entry in records[seen:]:
            on_metrics(entry)
        seen = len(records)
        ended_here = master_exit.exists()
        if time.monotonic() >= next_check or (ended_here and not asked_after_end):
            asked_after_end = ended_here
            record = refresh(cluster, jobs.resolve(job_id))
            if record.state not in ("launching", "running"):
                for entry in read_metrics(metrics)[seen:]:
                    on_metrics(entry)
                return record
            # Once the master is done, the workers are finishing too: ask again soon.
            next_check = time.monotonic() + (3.0 if ended_here else check_every)
        time.sleep(poll)
