"""The queue's files: a job submitted to run when its nodes are free, and its start.

A submitted job is a job like any other (an experiment directory, a history, a controller) that
begins at `queued`. `submit` writes what the launch needs into the job's directory
(`submission.json`, private to the user) and returns; the daemon decides when and where it
starts (ugro.queue.schedule) and hands it to a controller of its own (`dispatch`), which records
`launching` and starts it as a launch would. The history's lock lets exactly one of a
controller's start and a user's cancel win (ugro.queue.cancel).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any

from ugro.core.cluster import Cluster
from ugro.core.errors import UsageError
from ugro.core.files import read_json, write_json_atomic
from ugro.launch.definition import JobScript, LaunchRequest, create_job, job_config, job_nodes
from ugro.queue.schedule import Placement
from ugro.records.controller_files import ControllerHandle, ControllerOptions
from ugro.records.history import JobRecord, Jobs

log = logging.getLogger(__name__)

SUBMISSION = "submission.json"


def submit(
    cluster: Cluster,
    request: LaunchRequest,
    options: ControllerOptions,
    placement: Placement,
    *,
    sweep: Mapping[str, Any] | None = None,
) -> str:
    """Queue a job: its directory, config.json and submission.json written, `queued` recorded.
    Returns its id."""
    JobScript.choose(request.script)  # a missing script is refused now, not at its turn
    wanted = job_nodes(cluster, placement.nodes)
    if placement.count is not None and placement.count > len(cluster.nodes):
        raise UsageError(
            f"--node-count {placement.count}: {cluster.name} has {len(cluster.nodes)} nodes"
        )
    jobs = Jobs(cluster)
    job_id = create_job(jobs, request.name)
    config = job_config(cluster, job_id, request, wanted)
    jobs.write_config(
        replace(config, placement=asdict(placement), sweep=dict(sweep) if sweep else None)
    )
    path = jobs.experiment_dir(job_id) / SUBMISSION
    write_json_atomic(
        path,
        {
            "options": asdict(replace(options, request=request.to_json())),
            "placement": asdict(placement),
        },
    )
    path.chmod(0o600)
    detail: dict[str, Any] = {"placement": asdict(placement)}
    if sweep:
        detail["sweep"] = dict(sweep)
    jobs.record(job_id, "queued", **detail)
    log.info(
        "queued %s for %s: %s %s",
        job_id,
        placement.describe(),
        request.script,
        " ".join(request.args),
    )
    return job_id


def submission(jobs: Jobs, job_id: str) -> tuple[ControllerOptions, Placement]:
    data = read_json(jobs.experiment_dir(job_id) / SUBMISSION)
    if not isinstance(data, dict):
        raise UsageError(f"{job_id}: its {SUBMISSION} is missing or unreadable")
    return ControllerOptions.from_json(data.get("options") or {}), Placement.from_json(
        data.get("placement")
    )


def dispatch(cluster: Cluster, job_id: str, nodes: Sequence[str]) -> int:
    """Give a queued job its nodes and a controller of its own, which starts it. Returns the
    controller's pid. Safe to repeat: a second controller finds the first's lock and leaves."""
    jobs = Jobs(cluster)
    options, _ = submission(jobs, job_id)
    request = {**options.request, "nodes": list(nodes)}
    jobs.write_config(replace(jobs.config(job_id), nodes=tuple(nodes)))
    controller = ControllerHandle(jobs.experiment_dir(job_id))
    controller.prepare(cluster, replace(options, request=request))
    log.info("starting %s on %s", job_id, ", ".join(nodes))
    return controller.spawn()


def dispatched(jobs: Jobs, record: JobRecord) -> bool:
    """Whether a queued job has been given its nodes (its controller starts it)."""
    return record.queued and ControllerHandle(jobs.experiment_dir(record.job_id)).exists()


def queue_order(records: Mapping[str, JobRecord]) -> list[JobRecord]:
    """The queued jobs (of Jobs.records()), first submitted first: by when each was queued,
    and within one second in the history's order (Jobs.records() keeps it for equal times)."""
    return sorted((r for r in records.values() if r.queued), key=lambda r: r.created_at)
