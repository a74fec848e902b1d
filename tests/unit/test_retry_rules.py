"""Which ended attempts a job's controller starts again, and why it does not (no process is
started here: the rules read the history and the controller's options)."""

from __future__ import annotations

from typing import Any

import pytest

from ugro.controller import Controller
from ugro.jobs import Jobs
from ugro.watcher import ControllerOptions, Watcher

JOB = "night_20260101_000000"


@pytest.fixture
def controller(cluster) -> Controller:
    jobs = Jobs(cluster)
    jobs.create(JOB)
    watcher = Watcher(jobs.experiment_dir(JOB))
    watcher.prepare(cluster, ControllerOptions(retries=2, request={"name": "night"}))
    return Controller(cluster, JOB, watcher)


def end_attempt(jobs: Jobs, attempt: int, state: str, **detail: Any) -> None:
    jobs.record(JOB, "launching", attempt=attempt)
    jobs.record(JOB, "running", attempt=attempt)
    jobs.record(JOB, state, attempt=attempt, **detail)  # type: ignore[arg-type]


def why_not(controller: Controller) -> str | None:
    return controller._no_retry(controller.jobs.find(JOB))


def test_a_rank_killed_mid_training_is_retried(controller) -> None:
    end_attempt(controller.jobs, 1, "failed", failure={"cause": "killed"}, last_step=12)
    assert why_not(controller) is None


def test_a_lost_node_is_retried_until_the_retries_are_spent(controller) -> None:
    for attempt in (1, 2):
        end_attempt(controller.jobs, attempt, "lost", failure={"cause": "unreachable"}, last_step=5)
        assert why_not(controller) is None
    end_attempt(controller.jobs, 3, "lost", failure={"cause": "unreachable"}, last_step=5)
    assert why_not(controller) == "no retries left (2 allowed)"


@pytest.mark.parametrize(
    ("failure", "last_step", "reason"),
    [
        ({"cause": "exit", "exit_code": 2}, 3, "refused its options"),
        ({"cause": "exit", "exit_code": 1}, None, "before its first training step"),
        ({"cause": "agent_exit", "exit_code": 1}, None, "before its first training step"),
    ],
)
def test_failures_retrying_cannot_fix_are_not_retried(controller, failure, last_step, reason):
    end_attempt(controller.jobs, 1, "failed", failure=failure, last_step=last_step)
    assert reason in (why_not(controller) or "")


def test_out_of_memory_at_the_same_step_twice_is_not_retried(controller) -> None:
    oom = {"cause": "exit", "exit_code": 1, "tail": ["torch.OutOfMemoryError: CUDA out of memory"]}
    end_attempt(controller.jobs, 1, "failed", failure=oom, last_step=40)
    assert why_not(controller) is None  # once may be a neighbour's memory: try again
    end_attempt(controller.jobs, 2, "failed", failure=oom, last_step=40)
    assert why_not(controller) == "out of memory at step 40 twice"


def test_a_stop_or_a_success_ends_the_job(controller) -> None:
    end_attempt(controller.jobs, 1, "succeeded")
    assert why_not(controller) == "the job succeeded"
    controller.watcher.request_stop()
    assert why_not(controller) == "the user stopped the job"


def test_a_launch_that_failed_is_not_retried(controller) -> None:
    jobs = controller.jobs
    jobs.record(JOB, "launching", attempt=1)
    jobs.record(JOB, "failed", attempt=1, reason="gpu1 unreachable: timed out")
    assert (why_not(controller) or "").startswith("the launch itself failed")
