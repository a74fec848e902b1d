"""Starting a job's next attempt after a failure: the retry rules applied (ugro.controller.
retry), the backoff waited, the job's nodes awaited (cleaned of the last attempt's leftovers
first), the batch kept on fewer nodes, and the attempt started as a launch would (through
Slurm: submitted to its queue, for ugro.controller.slurm_start to launch when allocated)."""

from __future__ import annotations

import logging
import os
import time

from ugro.controller.context import ControllerContext
from ugro.controller.leftovers import LEFTOVER_PROBE_S, clean_pending
from ugro.controller.retry import args_on_nodes, backoff_s, nodes_to_retry_on, why_not_retry
from ugro.core.errors import UgroError
from ugro.launch import through_slurm
from ugro.launch.attempt import start_attempt
from ugro.launch.definition import (
    DEFAULT_SCRIPT,
    LaunchRequest,
    default_grad_accum,
    ranks_per_node,
)
from ugro.records.controller_files import WAITING_TO_RETRY
from ugro.records.history import JobRecord

log = logging.getLogger(__name__)


def retry(ctx: ControllerContext, record: JobRecord) -> bool:
    """Start the next attempt if this one may be retried; False when the job is over."""
    why_not = why_not_retry(
        record,
        retries=ctx.options.retries,
        stop_requested=ctx.handle.stop_requested() is not None,
        earlier=ctx.jobs.history(ctx.job_id),
    )
    if why_not:
        _note_not_retried(ctx, record, why_not)
        return False
    attempt = record.attempt + 1
    delay = backoff_s(record.attempt, base_s=ctx.options.backoff_s, max_s=ctx.options.backoff_max_s)
    ctx.publish(
        WAITING_TO_RETRY,
        f"attempt {attempt} in {delay:.0f}s",
        force=True,
        next_attempt=attempt,
        retry_at=round(time.time() + delay, 3),
    )
    if not ctx.sleep(delay):
        return False
    request = LaunchRequest.from_json(ctx.options.request)
    if request.scheduler_on(ctx.cluster) == through_slurm.SLURM:
        return _retry_in_slurm(ctx, record, attempt)
    nodes = wait_for_nodes(ctx, record)
    if nodes is None:
        return False
    args = args_for(ctx, request, nodes)
    if args is None:
        return False
    written = ctx.jobs.record(
        ctx.job_id,
        "launching",
        attempt=attempt,
        nodes=nodes,
        launcher_pid=os.getpid(),
        retry_of=record.attempt,
        retry_reason=record.cause,
    )
    if not written:
        return True  # someone else moved the job on: look again
    ctx.attempt = attempt
    ctx.publish("launching", f"attempt {attempt} on {', '.join(nodes)}", force=True)
    try:
        start_attempt(ctx.cluster, ctx.job_id, request, attempt=attempt, nodes=nodes, args=args)
    except UgroError as exc:
        log.warning("%s attempt %d did not start: %s", ctx.job_id, attempt, exc.message)
    return True


def _retry_in_slurm(ctx: ControllerContext, record: JobRecord, attempt: int) -> bool:
    """The next attempt into Slurm's queue: on the job's nodes that answer (not below
    --min-nodes), or for a job that asked for a count, any that many (at least --min-nodes)
    but those that do not answer. Its controller launches it when Slurm allocates them."""
    placement = record.detail.get("placement") or {}
    count = int(placement.get("count") or 0)
    experiment_dir = ctx.jobs.experiment_dir(ctx.job_id)
    try:
        if count:
            clean_pending(ctx)
            silent = [n for n in ctx.cluster.node_names if not ctx.link(n).probe()]
            most = min(count, len(ctx.cluster.node_names) - len(silent))
            fewest = min(ctx.options.min_nodes or count, count)
            if most < fewest:
                why = f"{', '.join(silent)} did not answer: fewer than {fewest} nodes for Slurm"
                ctx.jobs.note(ctx.job_id, "not_retried", attempt=record.attempt, reason=why)
                return False
            slurm_job = through_slurm.submit(
                ctx.cluster, experiment_dir, ctx.job_id, attempt,
                count=most, fewest=fewest, exclude=silent,
            )  # fmt: skip
        else:
            nodes = wait_for_nodes(ctx, record)
            if nodes is None:
                return False
            slurm_job = through_slurm.submit(
                ctx.cluster, experiment_dir, ctx.job_id, attempt, nodes=nodes
            )
    except UgroError as exc:
        ctx.jobs.note(ctx.job_id, "not_retried", attempt=record.attempt, reason=exc.message)
        log.warning("%s: attempt %d not submitted to Slurm: %s", ctx.job_id, attempt, exc.message)
        return False
    ctx.jobs.record(
        ctx.job_id,
        "queued",
        attempt=attempt,
        slurm_job=slurm_job,
        placement=placement,
        retry_of=record.attempt,
        retry_reason=record.cause,
    )
    ctx.attempt = attempt
    return True


def _note_not_retried(ctx: ControllerContext, record: JobRecord, why_not: str) -> None:
    if record.state not in ("failed", "lost") or not ctx.options.retries:
        return
    log.info("%s: not retrying: %s", ctx.job_id, why_not)
    if not any(e.get("attempt") == record.attempt for e in record.events("not_retried")):
        ctx.jobs.note(ctx.job_id, "not_retried", reason=why_not, attempt=record.attempt)


def wait_for_nodes(ctx: ControllerContext, record: JobRecord) -> list[str] | None:
    """The job's nodes once they all answer; fewer (not below --min-nodes, the lead included)
    if some stay down past node_wait_s; None to give up."""
    wanted = list(ctx.jobs.config(ctx.job_id).nodes or ctx.jobs.nodes(record))
    deadline = time.monotonic() + ctx.options.node_wait_s
    while True:
        # A node that was unreachable at the last teardown may still run the old attempt: it
        # is cleaned before it takes part again.
        dirty = set(clean_pending(ctx))
        up = [n for n in wanted if n not in dirty and ctx.link(n).probe()]
        down = [n for n in wanted if n not in up]
        chosen = nodes_to_retry_on(wanted, up, min_nodes=ctx.options.min_nodes)
        if chosen is not None:
            if down:
                log.info(
                    "%s: retrying on %s without %s", ctx.job_id, ", ".join(up), ", ".join(down)
                )
            return chosen
        if time.monotonic() >= deadline:
            why = f"{', '.join(down)} did not answer within {ctx.options.node_wait_s:.0f}s"
            ctx.jobs.note(ctx.job_id, "not_retried", attempt=record.attempt, reason=why)
            return None
        ctx.publish(
            "waiting for nodes",
            f"{', '.join(down)} unreachable",
            force=True,
            next_attempt=record.attempt + 1,
        )
        if not ctx.sleep(LEFTOVER_PROBE_S):
            return None


def args_for(
    ctx: ControllerContext, request: LaunchRequest, nodes: list[str]
) -> tuple[str, ...] | None:
    """The next attempt's arguments: on fewer nodes than the job began with, the same global
    batch through more gradient accumulation (train_production.py only)."""
    config = ctx.jobs.config(ctx.job_id)
    original = list(config.nodes or nodes)
    args, why = args_on_nodes(
        request.resume_args(),
        own_script=request.script != DEFAULT_SCRIPT,
        default_accum=default_grad_accum(ctx.jobs.experiment_dir(ctx.job_id)),
        ranks_per_node=config.ranks_per_node or ranks_per_node(config.commands),
        original=original,
        nodes=nodes,
    )
    if args is None:
        ctx.jobs.note(ctx.job_id, "not_retried", reason=why)
        log.info("%s: not retrying on %s: %s", ctx.job_id, ", ".join(nodes), why)
    return args
