"""Ending an attempt: every process of it ended on every node and checked gone, its files
brought home, its one final state recorded with its cause and when it really ended, and
summary.json written."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from ugro.controller import slurm_watch
from ugro.controller.context import ControllerContext, iso, wall
from ugro.controller.retry import why_not_retry
from ugro.controller.watch import Outcome
from ugro.core.errors import UgroError
from ugro.launch.job_playbooks import collect
from ugro.records.controller_files import WAITING_TO_RETRY
from ugro.records.history import JobRecord
from ugro.results.summary import write_summary

log = logging.getLogger(__name__)

_TEARDOWN_KEYS = ("signalled", "killed", "left", "gpu_held", "gpu_checked", "took_s")


def teardown(ctx: ControllerContext, nodes: list[str]) -> dict[str, dict[str, Any]]:
    """Every process of the job ended on every node that answers, and checked gone (jobctl
    stop on every node in parallel: SIGTERM, the grace, SIGKILL, none left, GPU memory freed)."""
    ctx.publish("tearing down", f"stopping {ctx.job_id} on {', '.join(nodes)}", force=True)
    links = [ctx.link(name) for name in nodes]
    with ThreadPoolExecutor(max_workers=max(len(links), 1)) as pool:
        reports = list(pool.map(lambda link: link.stop(grace=ctx.options.stop_grace_s), links))
    results: dict[str, dict[str, Any]] = {}
    for name, report in zip(nodes, reports, strict=True):
        if "unreachable" in report:
            results[name] = {"unreachable": report["unreachable"]}
        else:
            results[name] = {key: report.get(key) for key in _TEARDOWN_KEYS}
    return results


def end_attempt(ctx: ControllerContext, record: JobRecord, outcome: Outcome) -> None:
    nodes = ctx.jobs.nodes(record)
    # Slurm first, so that it records the job cancelled rather than a batch script whose steps
    # UGRO ended; UGRO's teardown then checks that nothing is left. A job that succeeded ends
    # in Slurm by itself (COMPLETED).
    if outcome.state != "succeeded":
        slurm_watch.cancel(ctx.cluster, record)
    torn_down = teardown(ctx, nodes)
    down_at = time.monotonic()
    reachable = [n for n in nodes if "unreachable" not in torn_down[n]]
    ctx.publish("collecting", f"bringing {ctx.job_id}'s files home", force=True)
    try:
        collect(ctx.cluster, ctx.job_id, reachable)
    except UgroError as exc:
        log.warning("collecting %s: %s", ctx.job_id, exc.message)
    record_end(ctx, record, outcome, torn_down, down_at=down_at)
    try:
        # summary.json for the attempt just ended (a retry's end writes it again).
        write_summary(ctx.jobs, ctx.jobs.find(ctx.job_id))
    except (OSError, UgroError) as exc:
        log.warning("summary of %s: %s", ctx.job_id, exc)


def record_end(
    ctx: ControllerContext,
    record: JobRecord,
    outcome: Outcome,
    torn_down: dict[str, dict[str, Any]],
    *,
    down_at: float | None = None,
) -> None:
    """The attempt's one final state, with what the teardown found; nodes it could not reach
    are remembered for cleanup (ugro.controller.leftovers)."""
    unreachable = sorted(n for n, r in torn_down.items() if "unreachable" in r)
    survivors = {n: r["left"] for n, r in torn_down.items() if r.get("left")}
    ctx.pending_cleanup = sorted(set(ctx.pending_cleanup) | set(unreachable))
    detail: dict[str, Any] = {"ended_at": iso(wall(outcome.at)), "teardown": torn_down}
    if outcome.problem is not None:
        detail["failure"] = outcome.problem.as_detail()
    if outcome.reason:
        detail["reason"] = outcome.reason
    if outcome.last_step is not None:
        detail["last_step"] = outcome.last_step
    if unreachable:
        detail["pending_cleanup"] = unreachable
    if survivors:
        detail["survivors"] = survivors
    if outcome.detected:
        detail["timeline"] = {
            "ended": round(wall(outcome.at), 3),
            "detected": round(wall(outcome.detected), 3),
            **({"down": round(wall(down_at), 3)} if down_at else {}),
        }
    ended = replace(record, state=outcome.state, detail={**record.detail, **detail})  # type: ignore[arg-type]
    _announce_retry(ctx, ended)
    written = ctx.jobs.record(ctx.job_id, outcome.state, attempt=record.attempt, **detail)  # type: ignore[arg-type]
    log.info(
        "%s %s (attempt %d)%s%s",
        ctx.job_id,
        outcome.state,
        record.attempt,
        f": {outcome.reason}" if outcome.reason else "",
        "" if written else " (not recorded: the attempt had already ended)",
    )


def _announce_retry(ctx: ControllerContext, ended: JobRecord) -> None:
    """Before the attempt's end is written: say whether another attempt will follow, so that no
    reader of the history takes a failure with a retry to come for the job's end."""
    why_not = why_not_retry(
        ended,
        retries=ctx.options.retries,
        stop_requested=ctx.handle.stop_requested() is not None,
        earlier=ctx.jobs.history(ctx.job_id),
    )
    if why_not is None:
        ctx.publish(WAITING_TO_RETRY, "deciding", force=True, next_attempt=ended.attempt + 1)
