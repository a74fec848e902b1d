"""A job's playbooks run by hand: stop.yml (every process of the job ended, checked gone) and
collect.yml (its logs and every worker's outputs brought into the experiment directory).

The job's controller uses them too (ugro.controller), and so does a user's stop when no
controller can answer it (ugro.queue.cancel); each is one playbook through ugro.nodes.runner.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ugro.core.cluster import Cluster
from ugro.core.errors import UgroError
from ugro.nodes.runner import RunResult, run_playbook
from ugro.records.history import Jobs

log = logging.getLogger(__name__)


def job_extravars(cluster: Cluster, job_id: str) -> dict[str, Any]:
    """What the job playbooks (status, stop, collect) need to find a job on every node."""
    jobs = Jobs(cluster)
    nodes = jobs.config(job_id).nodes or (cluster.master.name,)
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
