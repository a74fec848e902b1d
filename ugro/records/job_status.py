"""A job's state as a person or a script should read it: whether it is still going, in a line.

The history's state alone misleads between two attempts: an attempt that failed is `failed`
while its controller is about to start the next one. So `results`, `status`, their `--json`
and the dashboard say "failed (attempt 1 of 3); attempt 2 starts in 5 s", and `ongoing` is
true until the job has ended for good (no controller that will start another attempt).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ugro.records.controller_files import WAITING_TO_RETRY, ControllerHandle, ControllerState
from ugro.records.history import JobRecord, Jobs


@dataclass(frozen=True)
class JobStatus:
    state: str
    attempt: int
    ongoing: bool  # queued, running, or ended with another attempt to come
    line: str

    def to_json(self) -> dict[str, object]:
        return {"ongoing": self.ongoing, "status_line": self.line}


def job_status(jobs: Jobs, record: JobRecord, *, now: float | None = None) -> JobStatus:
    """The job's status from its history and, once an attempt has ended, its controller."""
    attempt = f" (attempt {record.attempt})" if record.attempt > 1 else ""
    if not record.ended:
        return JobStatus(record.state, record.attempt, True, record.state + attempt)
    controller = ControllerHandle(jobs.experiment_dir(record.job_id))
    state = controller.state()
    if state.next_attempt is None or not controller.working():
        return JobStatus(record.state, record.attempt, False, record.state + attempt)
    allowed = controller.options().retries + 1
    return JobStatus(
        record.state,
        record.attempt,
        True,
        f"{record.state} (attempt {record.attempt} of {allowed}); "
        + next_attempt(record.attempt, state, time.time() if now is None else now),
    )


def next_attempt(ended: int, state: ControllerState, now: float) -> str:
    """What the controller does towards the next attempt, in a few words."""
    coming = state.next_attempt or ended + 1
    if state.phase == WAITING_TO_RETRY and state.retry_at is not None:
        return f"attempt {coming} starts in {max(state.retry_at - now, 0):.0f} s"
    if state.phase == WAITING_TO_RETRY:
        return f"attempt {coming} to come"
    return f"attempt {coming} to come ({state.phase}: {state.message})"
