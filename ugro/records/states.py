"""A job's states and the transitions between them, written down once.

The history (`data/job_history.jsonl`, ugro.jobs) refuses any other transition, under its lock,
so two writers (a job's controller and a user's `ugro stop`, say) can never give one attempt two
final states. Tests read the same table.

An attempt is one start of a job on its nodes. Attempt 1 is the launch; a retry after a failure
(`--retries`) or `ugro launch --resume JOB` begins the next attempt, at `launching` again. A job
given to the queue (`ugro submit`) begins at `queued`, until the daemon gives it its nodes. A
job through Slurm waits `queued` in Slurm's queue, each attempt anew, until Slurm allocates
its nodes (ugro.launch.through_slurm).

    queued -> launching                       (its nodes are free: the daemon starts it)
    queued -> stopped                         (cancelled before it started)
    queued -> failed                          (Slurm ended it in its queue)
    launching -> running -> succeeded | failed | stopped | lost
    launching -> failed | stopped | lost     (refused, interrupted, or lost while starting)
    a final state -> launching | queued      (only as the next attempt; queued: in Slurm's)
"""

from __future__ import annotations

from typing import Literal

State = Literal["queued", "launching", "running", "succeeded", "failed", "stopped", "lost"]

WAITING_STATES: tuple[State, ...] = ("queued",)
ACTIVE_STATES: tuple[State, ...] = ("launching", "running")
FINAL_STATES: tuple[State, ...] = ("succeeded", "failed", "stopped", "lost")
STATES: tuple[State, ...] = WAITING_STATES + ACTIVE_STATES + FINAL_STATES

# Within one attempt: what may follow each state (None: the job has no history yet).
TRANSITIONS: dict[State | None, frozenset[State]] = {
    None: frozenset({"queued", "launching"}),
    "queued": frozenset({"launching", "stopped", "failed"}),
    "launching": frozenset({"running", "failed", "stopped", "lost"}),
    "running": frozenset({"succeeded", "failed", "stopped", "lost"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "stopped": frozenset(),
    "lost": frozenset(),
}
# A final state is followed by the next attempt's `launching` (or `queued`, when Slurm gives
# each attempt its nodes) and nothing else.
NEXT_ATTEMPT_FROM: frozenset[State] = frozenset(FINAL_STATES)
NEXT_ATTEMPT_BEGINS: frozenset[State] = frozenset({"launching", "queued"})


def refusal(
    current: State | None, current_attempt: int, new: State, new_attempt: int
) -> str | None:
    """Why `current` (of `current_attempt`) may not become `new` (of `new_attempt`); None if
    it may."""
    if new not in STATES:
        return f"{new!r} is not a job state"
    if current is None:
        if new in TRANSITIONS[None]:
            return None
        return f"a job begins at queued or launching, not {new}"
    if new_attempt == current_attempt:
        if new in TRANSITIONS[current]:
            return None
        if current in FINAL_STATES:
            return f"attempt {current_attempt} already ended {current}"
        return f"{current} cannot become {new}"
    if (
        new_attempt == current_attempt + 1
        and new in NEXT_ATTEMPT_BEGINS
        and current in NEXT_ATTEMPT_FROM
    ):
        return None
    if new_attempt == current_attempt + 1:
        return f"attempt {new_attempt} may begin only once attempt {current_attempt} has ended"
    return f"attempt {new_attempt} does not follow attempt {current_attempt}"
