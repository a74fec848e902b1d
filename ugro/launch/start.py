"""Starting a job: a new one (`ugro launch`), or an ended one again (`ugro launch --resume`).

Either way the job's directory and config.json are written on the master, its controller's
files prepared and the controller spawned before the nodes start (if this process dies
mid-launch, the controller notices and cleans up), and then one attempt is started
(ugro.launch.attempt). From then on the job is its controller's (ugro.controller).

Through Slurm (`to_slurm`), the job's first attempt is submitted to Slurm's queue instead, and
its controller launches it when Slurm allocates its nodes (ugro.launch.through_slurm).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace

from ugro.core.cluster import Cluster
from ugro.core.errors import UsageError
from ugro.core.layout import new_job_id
from ugro.launch import through_slurm
from ugro.launch.attempt import LaunchResult, check_extravars, preview, start_attempt
from ugro.launch.definition import JobScript, LaunchRequest, create_job, job_config, job_nodes
from ugro.nodes.runner import EventCallback
from ugro.records.controller_files import ControllerHandle, ControllerOptions
from ugro.records.history import Jobs


def launch(
    cluster: Cluster,
    request: LaunchRequest,
    *,
    dry_run: bool = False,
    on_event: EventCallback | None = None,
    options: ControllerOptions | None = None,
) -> LaunchResult:
    """Start a job on its nodes, with its controller watching from the start (or, with
    dry_run, only show what each node would run)."""
    check_extravars(request)
    nodes = job_nodes(cluster, request.nodes)
    if dry_run:
        return preview(cluster, request, new_job_id(request.name), nodes, on_event=on_event)
    jobs = Jobs(cluster)
    job_id = create_job(jobs, request.name)
    jobs.write_config(job_config(cluster, job_id, request, nodes))
    controller = ControllerHandle(jobs.experiment_dir(job_id))
    controller.prepare(cluster, replace(options or ControllerOptions(), request=request.to_json()))
    jobs.record(job_id, "launching", attempt=1, nodes=nodes, launcher_pid=os.getpid())
    # The controller starts before the nodes do: if this process dies mid-launch, it notices
    # (the launcher is gone while the job is still `launching`) and cleans up.
    controller.spawn()
    return start_attempt(
        cluster, job_id, request, attempt=1, nodes=nodes, args=request.args, on_event=on_event
    )


@dataclass(frozen=True)
class Submitted:
    """An attempt in Slurm's queue: its controller launches it when Slurm allocates nodes."""

    job_id: str
    slurm_job: str
    nodes: list[str]  # the nodes it names; empty: any `count` Slurm picks
    count: int = 0


def to_slurm(
    cluster: Cluster,
    request: LaunchRequest,
    *,
    count: int = 0,
    options: ControllerOptions | None = None,
) -> Submitted:
    """A new job into Slurm's queue, for its nodes or any `count` of them that Slurm picks:
    its directory, config.json and controller, and its first attempt submitted. A refusal
    leaves nothing behind."""
    check_extravars(request)
    JobScript.choose(request.script)  # a missing script is refused now, not at its turn
    named = job_nodes(cluster, request.nodes) if request.nodes or not count else []
    jobs = Jobs(cluster)
    job_id = create_job(jobs, request.name)
    try:
        jobs.write_config(job_config(cluster, job_id, request, named or cluster.node_names))
        slurm_job = through_slurm.submit(
            cluster, jobs.experiment_dir(job_id), job_id, 1, nodes=named, count=count
        )
    except BaseException:
        shutil.rmtree(jobs.experiment_dir(job_id), ignore_errors=True)
        raise
    controller = ControllerHandle(jobs.experiment_dir(job_id))
    controller.prepare(cluster, replace(options or ControllerOptions(), request=request.to_json()))
    # What it asks for, as a job in UGRO's own queue says it (ugro.queue.schedule.Placement).
    placement = {"nodes": named, "count": count or None, "min_vram_gb": None}
    jobs.record(job_id, "queued", attempt=1, slurm_job=slurm_job, placement=placement)
    controller.spawn()
    return Submitted(job_id, slurm_job, named, count)


def resume(
    cluster: Cluster,
    job_ref: str,
    *,
    options: ControllerOptions | None = None,
    nodes: tuple[str, ...] = (),
    on_event: EventCallback | None = None,
) -> LaunchResult | Submitted:
    """Continue an ended job (succeeded, failed, stopped or lost) from its newest complete
    checkpoint, as its next attempt, with a controller of its own again (through Slurm: its
    next attempt in Slurm's queue)."""
    jobs = Jobs(cluster)
    record = jobs.find(job_ref)
    controller = ControllerHandle(jobs.experiment_dir(record.job_id))
    if record.queued:
        raise UsageError(f"{record.job_id} is queued, not ended; `ugro cancel {record.job_id}`")
    if record.active or controller.alive():
        raise UsageError(
            f"{record.job_id} is {record.state} (attempt {record.attempt}) and has its "
            f"controller; `ugro stop {record.job_id}` ends it first"
        )
    config = jobs.config(record.job_id)
    stored = controller.options().request if controller.exists() else {}
    request = LaunchRequest.from_json(
        stored
        or {
            "name": record.name,
            "script": config.script,
            "args": config.args,
            "nodes": config.nodes,
            "allow_drift": config.allow_drift,
        }
    )
    if nodes:
        request = replace(request, nodes=nodes)
    chosen = job_nodes(cluster, request.nodes)
    controller.prepare(cluster, replace(options or ControllerOptions(), request=request.to_json()))
    attempt = record.attempt + 1
    if request.scheduler_on(cluster) == through_slurm.SLURM:
        slurm_job = through_slurm.submit(
            cluster, jobs.experiment_dir(record.job_id), record.job_id, attempt, nodes=chosen
        )
        queued = jobs.record(
            record.job_id,
            "queued",
            attempt=attempt,
            slurm_job=slurm_job,
            placement={"nodes": chosen, "count": None, "min_vram_gb": None},
            resumed_from=record.attempt,
        )
        if not queued:
            raise UsageError(f"{record.job_id} changed while resuming it; look at `ugro status`")
        controller.spawn()
        return Submitted(record.job_id, slurm_job, chosen)
    written = jobs.record(
        record.job_id,
        "launching",
        attempt=attempt,
        nodes=chosen,
        launcher_pid=os.getpid(),
        resumed_from=record.attempt,
    )
    if not written:
        raise UsageError(f"{record.job_id} changed while resuming it; look at `ugro status`")
    controller.spawn()
    return start_attempt(
        cluster,
        record.job_id,
        request,
        attempt=attempt,
        nodes=chosen,
        args=request.resume_args(),
        on_event=on_event,
    )
