"""A running job across its nodes: its live state, the verdict, stop, collect, and the history.

Each step is one playbook through ugro.runner (status.yml, stop.yml, collect.yml); this module
decides what to run and what it means, and writes the job's history on the master. `ugro stop`
and `ugro run stop` both end in `stop_job`, `ugro status`/`results`/`logs` in `refresh`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ugro.cluster import Cluster
from ugro.errors import UgroError
from ugro.jobs import JobRecord, Jobs
from ugro.runner import RunResult, run_playbook

log = logging.getLogger(__name__)


def job_extravars(cluster: Cluster, job_id: str) -> dict[str, Any]:
    """What the job playbooks (status, stop, collect) need to find a job on every node."""
    return {"ugro_job_id": job_id, "ugro_collect_dest": str(Jobs(cluster).experiment_dir(job_id))}


def live_state(
    cluster: Cluster, job_id: str, nodes: list[str], *, collect_logs: bool = False
) -> dict[str, dict[str, Any]]:
    """Each node's view of the job: processes, pid, exit codes, failed ranks' log tails; with
    collect_logs, the nodes' rank logs are brought home in the same run."""
    extravars = {**job_extravars(cluster, job_id), "ugro_status_collect_logs": collect_logs}
    result = run_playbook(cluster, "status", extravars=extravars, limit=nodes)
    states = result.facts("ugro_job_state")
    for name in nodes:
        if name not in states:
            outcome = result.hosts.get(name)
            states[name] = {
                "unreachable": True,
                "message": outcome.message if outcome else "not reached",
            }
    return states


def stop(
    cluster: Cluster,
    job_id: str,
    nodes: list[str],
    *,
    extravars: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Stop every process of the job on every node; fails if any survives."""
    log.info("stopping %s on %s", job_id, ", ".join(nodes))
    variables = {**(extravars or {}), **job_extravars(cluster, job_id)}
    result = run_playbook(cluster, "stop", extravars=variables, limit=nodes)
    result.raise_for_status()
    return result.facts("ugro_job_state")


def stop_quietly(cluster: Cluster, job_id: str, nodes: list[str]) -> None:
    """Stop on the way out of a failure: a node that cannot be reached must not hide the failure."""
    try:
        stop(cluster, job_id, nodes)
    except UgroError as exc:
        log.warning("stopping %s after a failure: %s", job_id, exc.message)


def collect(
    cluster: Cluster,
    job_id: str,
    nodes: list[str],
    *,
    extravars: Mapping[str, Any] | None = None,
) -> RunResult:
    """Bring the job's logs and every worker's outputs into the master's experiment directory."""
    variables = {**(extravars or {}), **job_extravars(cluster, job_id)}
    return run_playbook(cluster, "collect", extravars=variables, limit=nodes).raise_for_status()


@dataclass(frozen=True)
class StopReport:
    job_id: str
    nodes: list[str]
    signalled: int
    collect_error: str | None


def stop_job(
    cluster: Cluster, record: JobRecord, *, extravars: Mapping[str, Any] | None = None
) -> StopReport:
    """A user's stop: every process of the job on every node, its files home, `stopped` recorded."""
    jobs = Jobs(cluster)
    nodes = jobs.nodes(record)
    states = stop(cluster, record.job_id, nodes, extravars=extravars)
    collect_error = None
    try:
        collect(cluster, record.job_id, nodes, extravars=extravars)
    except UgroError as exc:
        collect_error = exc.message
    if record.active:
        jobs.record(record.job_id, "stopped")
        log.info("%s stopped by the user", record.job_id)
    signalled = sum(int(s.get("signalled", 0)) for s in states.values())
    return StopReport(record.job_id, nodes, signalled, collect_error)


@dataclass(frozen=True)
class Verdict:
    """What the nodes' states say about a job."""

    state: Literal["running", "succeeded", "failed"]
    failure: dict[str, Any] | None = None


def judge(states: dict[str, dict[str, Any]]) -> Verdict:
    failures: list[dict[str, Any]] = []
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


def finish(cluster: Cluster, record: JobRecord, verdict: Verdict) -> None:
    """A job has ended (or failed on some node): stop what is left, collect, record."""
    jobs = Jobs(cluster)
    nodes = jobs.nodes(record)
    if verdict.state == "failed":
        stop_quietly(cluster, record.job_id, nodes)
    try:
        collect(cluster, record.job_id, nodes)
    except UgroError as exc:
        log.warning("collecting %s: %s", record.job_id, exc.message)
    detail = {"failure": verdict.failure} if verdict.failure else {}
    jobs.record(record.job_id, verdict.state, **detail)
    log.info("%s %s %s", record.job_id, verdict.state, verdict.failure or "")


def refresh(cluster: Cluster, record: JobRecord, *, collect_logs: bool = False) -> JobRecord:
    """Bring a job's recorded state up to date with the nodes (for status, results, logs)."""
    if not record.active:
        return record
    jobs = Jobs(cluster)
    states = live_state(cluster, record.job_id, jobs.nodes(record), collect_logs=collect_logs)
    verdict = judge(states)
    if verdict.state != "running":
        finish(cluster, record, verdict)
    return jobs.find(record.job_id)
