"""Watching one running attempt until it ends: succeeded, stopped, or the cause of its failure.

Each half second: a user's stop request, the nodes' heartbeats (ugro.controller.lost_nodes),
what they say (ugro.controller.detect), then either a decision or what the controller sees
published. A decision about a failure waits SETTLE_S after the first problem for the reports
that show its cause, and longer while a node is silent but not yet known lost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ugro.controller.context import POLL_S, ControllerContext, JobGone
from ugro.controller.detect import AttemptTracker, Problem, choose_cause
from ugro.controller.lost_nodes import Heartbeats
from ugro.controller.slurm_watch import SlurmFollower
from ugro.records.history import JobRecord

# After the first problem, wait this long for the reports that show its cause.
SETTLE_S = 1.5


@dataclass
class Outcome:
    state: str  # succeeded | failed | stopped | lost
    at: float  # time.monotonic() when the job ended
    problem: Problem | None = None
    reason: str = ""
    last_step: int | None = None
    detected: float = 0.0  # time.monotonic() when the controller knew


def watch_attempt(ctx: ControllerContext, record: JobRecord) -> Outcome:
    nodes = ctx.jobs.nodes(record)
    tracker = AttemptTracker(
        nodes,
        pg_timeout=float(ctx.cluster.launch.timeout_seconds),
        hang_timeout=ctx.options.hang_timeout,
        tolerate_rank_failures=ctx.cluster.launch.max_restarts > 0,
    )
    first_problem_at: float | None = None
    slurm = SlurmFollower.of(ctx.cluster, record)
    with Heartbeats(ctx, nodes).streaming() as heartbeats:
        while True:
            if ctx.gone():
                raise JobGone(ctx.job_id)
            now = time.monotonic()
            stop = ctx.handle.stop_requested()
            if stop is not None:
                return _stopped(stop, now, tracker)
            unsettled = heartbeats.look(now, tracker)
            problems = tracker.problems(now)
            if problems:
                first_problem_at = first_problem_at or now
                waited = now - first_problem_at
                settled = not unsettled or waited >= heartbeats.longest_wait()
                lost = any(p.kind == "unreachable" for p in problems)
                if (waited >= SETTLE_S and settled) or lost:
                    return _failed(problems, tracker, now)
            elif tracker.succeeded():
                return Outcome("succeeded", now, last_step=_last_step(tracker), detected=now)
            elif slurm is not None:
                slurm.look(now)
                end = slurm.ended(now, started=tracker.started())
                if end is not None:
                    return Outcome(
                        end.state,
                        now,
                        reason=end.reason,
                        detected=now,
                        last_step=_last_step(tracker),
                    )
            _publish(ctx, heartbeats, tracker, now, slurm.note() if slurm else "")
            time.sleep(POLL_S)


def _stopped(stop: dict[str, Any], now: float, tracker: AttemptTracker) -> Outcome:
    by = str(stop.get("by") or "the user")
    return Outcome(
        "stopped", now, reason=f"stopped by {by}", detected=now, last_step=_last_step(tracker)
    )


def _failed(problems: list[Problem], tracker: AttemptTracker, now: float) -> Outcome:
    cause = choose_cause(problems)
    assert cause is not None
    return Outcome(
        cause.final_state,
        min(p.at for p in problems),
        problem=cause,
        reason=cause.describe(),
        last_step=_last_step(tracker),
        detected=now,
    )


def _publish(
    ctx: ControllerContext,
    heartbeats: Heartbeats,
    tracker: AttemptTracker,
    now: float,
    note: str = "",
) -> None:
    stalled = tracker.stalled_for(now)
    ctx.publish(
        "watching",
        f"stalled for {stalled // 5 * 5:.0f}s" if stalled and stalled >= 10 else note,
        silent_s=heartbeats.silence(now),
        steps=tracker.steps(),
        stalled_s=round(stalled, 1) if stalled is not None else None,
        hang_timeout_s=round(tracker.current_hang_timeout(), 1),
    )


def _last_step(tracker: AttemptTracker) -> int | None:
    steps = tracker.steps()
    return max(steps.values()) if steps else None
