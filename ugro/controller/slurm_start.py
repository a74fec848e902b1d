"""A job through Slurm, from Slurm's queue to its nodes.

The attempt waits `queued` while Slurm holds it (its reason published beside the job: Resources,
Priority, ReqNodeNotAvail). When squeue shows it RUNNING, Slurm has allocated its nodes and runs
its batch script on the first of them, waiting for UGRO: the controller records `launching` on
exactly those nodes and runs the launch as for any job (ugro.launch.attempt), which releases
the batch script. A cancel while it waits takes it out of Slurm; Slurm ending it before it had
nodes (a scancel from outside, say) fails the attempt with Slurm's word; a launch that fails
gives the allocation back at once (the batch script would hold it for its whole wait).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace

from ugro.controller.context import ControllerContext
from ugro.controller.retrying import args_for
from ugro.controller.slurm_watch import ASK_EVERY_S, SlurmFollower, cancel_job
from ugro.core.errors import UgroError
from ugro.launch import through_slurm
from ugro.launch.attempt import start_attempt
from ugro.launch.definition import LaunchRequest
from ugro.records.history import JobRecord, now_iso
from ugro.slurm.jobs import SlurmJob

log = logging.getLogger(__name__)

QUEUED = "queued"


def start_when_allocated(ctx: ControllerContext, record: JobRecord) -> None:
    """Wait for Slurm to allocate the attempt's nodes, then launch on them."""
    slurm_id = str(record.detail["slurm_job"])
    follower = SlurmFollower(ctx.cluster, slurm_id)
    while True:
        current = ctx.jobs.find(ctx.job_id)
        if current.state != QUEUED or current.attempt != record.attempt or ctx.gone():
            if current.state == "stopped":  # cancelled while it waited
                cancel_job(ctx.cluster, slurm_id)
            return
        now = time.monotonic()
        follower.look(now)
        seen = follower.seen
        if seen is not None and seen.allocated:
            _launch_on(ctx, record, seen)
            return
        end = follower.ended(now, started=False)
        if end is not None:
            ctx.jobs.record(
                ctx.job_id, "failed", attempt=record.attempt, reason=end.reason, ended_at=now_iso()
            )
            return
        note = follower.note() or f"submitted to Slurm as job {slurm_id}"
        ctx.publish(QUEUED, note)
        # A stop request wakes it: the next look finds the job cancelled.
        ctx.sleep(ASK_EVERY_S)


def _launch_on(ctx: ControllerContext, record: JobRecord, seen: SlurmJob) -> None:
    slurm_id = seen.slurm_id
    try:
        given = through_slurm.allocation(ctx.cluster, seen)
    except UgroError as exc:
        cancel_job(ctx.cluster, slurm_id)
        ctx.jobs.record(
            ctx.job_id, "failed", attempt=record.attempt, reason=exc.message, ended_at=now_iso()
        )
        return
    request = LaunchRequest.from_json(ctx.options.request)
    # A later attempt (a retry, a resume) goes on from the newest checkpoint.
    args = request.args if record.attempt == 1 else args_for(ctx, request, given.nodes)
    if args is None:
        cancel_job(ctx.cluster, slurm_id)
        ctx.jobs.record(
            ctx.job_id,
            "failed",
            attempt=record.attempt,
            reason=f"not run on {', '.join(given.nodes)}, the nodes Slurm gave it",
            ended_at=now_iso(),
        )
        return
    if record.attempt == 1:
        # The job's nodes, as the daemon's dispatch writes them for a job of UGRO's queue.
        ctx.jobs.write_config(replace(ctx.jobs.config(ctx.job_id), nodes=tuple(given.nodes)))
    written = ctx.jobs.record(
        ctx.job_id,
        "launching",
        attempt=record.attempt,
        nodes=given.nodes,
        launcher_pid=os.getpid(),
    )
    if not written:  # cancelled at this moment: the loop sees `stopped`
        cancel_job(ctx.cluster, slurm_id)
        return
    ctx.publish("launching", f"Slurm gave it {', '.join(given.nodes)}", force=True)
    try:
        start_attempt(
            ctx.cluster,
            ctx.job_id,
            request,
            attempt=record.attempt,
            nodes=given.nodes,
            args=args,
            slurm=given,
        )
    except UgroError as exc:
        log.warning("%s attempt %d did not start: %s", ctx.job_id, record.attempt, exc.message)
        cancel_job(ctx.cluster, slurm_id)
