"""A job on its nodes, done by hand: stop, collect, and a stop that asks the job's controller.

Each step is one playbook through ugro.runner (stop.yml, collect.yml). A job's lifecycle belongs
to its controller (ugro.controller): a user's stop is a request to it (`stop_job`), and only when
no controller can answer does this module stop the job itself and write the history.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ugro.cluster import Cluster
from ugro.errors import UgroError
from ugro.jobs import JobRecord, Jobs, now_iso
from ugro.runner import RunResult, run_playbook
from ugro.watcher import Watcher

log = logging.getLogger(__name__)

# How long `ugro stop` waits for the controller to record the stop (its teardown takes the stop
# grace, a collect and a few seconds).
STOP_WAIT_S = 90.0


def job_extravars(cluster: Cluster, job_id: str) -> dict[str, Any]:
    """What the job playbooks (status, stop, collect) need to find a job on every node."""
    jobs = Jobs(cluster)
    nodes = jobs.config(job_id).get("nodes") or [cluster.master.name]
    return {
        "ugro_job_id": job_id,
        "ugro_collect_dest": str(jobs.experiment_dir(job_id)),
        "ugro_collect_lead": str(nodes[0]),
    }


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


def collect_logs(cluster: Cluster, job_id: str, nodes: list[str]) -> None:
    """The ranks' logs from `nodes`, as they are now (for `ugro logs`); failures only logged."""
    if not nodes:
        return
    try:
        collect(cluster, job_id, nodes, extravars={"ugro_collect_parts": ["logs"]})
    except UgroError as exc:
        log.warning("collecting %s's logs: %s", job_id, exc.message)


@dataclass(frozen=True)
class StopReport:
    job_id: str
    nodes: list[str]
    signalled: int
    collect_error: str | None
    state: str = "stopped"
    unreachable: tuple[str, ...] = ()


def stop_job(
    cluster: Cluster, record: JobRecord, *, extravars: Mapping[str, Any] | None = None
) -> StopReport:
    """A user's stop: every process of the job on every node, its files home, `stopped`
    recorded. The job's controller does it when there is one (started again if it died);
    this process does it itself only when none answers."""
    jobs = Jobs(cluster)
    nodes = jobs.nodes(record)
    if record.queued:
        from ugro.jobqueue import cancel

        if cancel(cluster, record):
            return StopReport(record.job_id, [], 0, None)
        record = jobs.find(record.job_id)  # it started meanwhile: stopped as a running job
    watcher = Watcher(jobs.experiment_dir(record.job_id))
    if watcher.exists() and (record.active or watcher.alive()):
        watcher.request_stop()
        watcher.ensure()
        deadline = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < deadline:
            current = jobs.find(record.job_id)
            if not current.active and (not watcher.alive() or watcher.finished()):
                return _report_from(current, nodes)
            if not current.active and watcher.state().get("phase") in ("cleanup", "done"):
                return _report_from(current, nodes)
            time.sleep(0.2)
        log.warning("%s: its controller did not stop it within %.0fs", record.job_id, STOP_WAIT_S)
    states = stop(cluster, record.job_id, nodes, extravars=extravars)
    collect_error = None
    try:
        collect(cluster, record.job_id, nodes, extravars=extravars)
    except UgroError as exc:
        collect_error = exc.message
    if jobs.find(record.job_id).active:
        jobs.record(record.job_id, "stopped", reason="stopped by the user", ended_at=now_iso())
        log.info("%s stopped by the user", record.job_id)
    signalled = sum(int(s.get("signalled", 0)) for s in states.values())
    return StopReport(record.job_id, nodes, signalled, collect_error)


def _report_from(record: JobRecord, nodes: list[str]) -> StopReport:
    teardown = record.detail.get("teardown") or {}
    signalled = sum(int(r.get("signalled") or 0) for r in teardown.values())
    unreachable = tuple(sorted(n for n, r in teardown.items() if "unreachable" in r))
    return StopReport(record.job_id, nodes, signalled, None, record.state, unreachable)
