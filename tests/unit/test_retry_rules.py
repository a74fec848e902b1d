"""The retry rules and the batch a retry keeps (ugro/controller/retry.py, pure): which ended
attempts a job's controller starts again, and why it does not, read from a real history; and
what a job reads between two attempts (ugro/records/job_status.py)."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from ugro.controller.retry import (
    args_on_nodes,
    backoff_s,
    keep_global_batch,
    nodes_to_retry_on,
    why_not_retry,
)
from ugro.core.processes import take_lock
from ugro.records.controller_files import (
    WAITING_TO_RETRY,
    ControllerHandle,
    ControllerOptions,
    ControllerState,
)
from ugro.records.history import Jobs
from ugro.records.job_status import job_status

JOB = "night_20260101_000000"


class Job:
    """A job's history and controller files, with two retries allowed."""

    def __init__(self, cluster: Any) -> None:
        self.jobs = Jobs(cluster)
        self.jobs.create(JOB)
        self.handle = ControllerHandle(self.jobs.experiment_dir(JOB))
        self.handle.prepare(cluster, ControllerOptions(retries=2, request={"name": "night"}))


@pytest.fixture
def controller(cluster) -> Job:
    return Job(cluster)


def end_attempt(jobs: Jobs, attempt: int, state: str, **detail: Any) -> None:
    jobs.record(JOB, "launching", attempt=attempt)
    jobs.record(JOB, "running", attempt=attempt)
    jobs.record(JOB, state, attempt=attempt, **detail)  # type: ignore[arg-type]


def why_not(controller: Job) -> str | None:
    return why_not_retry(
        controller.jobs.find(JOB),
        retries=controller.handle.options().retries,
        stop_requested=controller.handle.stop_requested() is not None,
        earlier=controller.jobs.history(JOB),
    )


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
    controller.handle.request_stop()
    assert why_not(controller) == "the user stopped the job"


def test_a_launch_that_failed_is_not_retried(controller) -> None:
    jobs = controller.jobs
    jobs.record(JOB, "launching", attempt=1)
    jobs.record(JOB, "failed", attempt=1, reason="gpu1 unreachable: timed out")
    assert (why_not(controller) or "").startswith("the launch itself failed")


def test_the_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff_s(n, base_s=5, max_s=60) for n in (1, 2, 3, 4, 5)] == [5, 10, 20, 40, 60]


def test_a_retry_waits_for_every_node_unless_min_nodes_and_the_lead_allow_fewer() -> None:
    wanted = ["m", "w1", "w2"]
    assert nodes_to_retry_on(wanted, wanted, min_nodes=None) == wanted
    assert nodes_to_retry_on(wanted, ["m", "w1"], min_nodes=None) is None
    assert nodes_to_retry_on(wanted, ["m", "w1"], min_nodes=2) == ["m", "w1"]
    assert nodes_to_retry_on(wanted, ["w1", "w2"], min_nodes=2) is None  # the lead is down
    assert nodes_to_retry_on(wanted, ["m"], min_nodes=2) is None


def test_a_retry_on_fewer_ranks_keeps_the_global_batch() -> None:
    # 3 ranks x accumulation 2 -> 1 rank x 6; the last --grad-accum wins, as argparse reads it.
    assert keep_global_batch(("--grad-accum", "2"), 8, 3, 1)[-2:] == ("--grad-accum", "6")
    assert keep_global_batch((), 4, 4, 2) == ("--grad-accum", "8")
    assert keep_global_batch(("--grad-accum", "1"), 8, 3, 2) is None  # 1.5 is not a step count
    ranks = {"m": 2, "w": 1, "v": 1}
    same = args_on_nodes(
        ("--lr", "1"),
        own_script=False,
        default_accum=4,
        ranks_per_node=ranks,
        original=["m", "w", "v"],
        nodes=["v", "m", "w"],
    )
    assert same == (("--lr", "1"), "")
    fewer = args_on_nodes(
        (),
        own_script=False,
        default_accum=4,
        ranks_per_node=ranks,
        original=["m", "w", "v"],
        nodes=["m", "w"],
    )
    assert fewer == (None, "cannot keep the global batch on 3 of 4 ranks")
    kept = args_on_nodes(
        (),
        own_script=False,
        default_accum=3,
        ranks_per_node=ranks,
        original=["m", "w", "v"],
        nodes=["m", "w"],
    )
    assert kept == (("--grad-accum", "4"), "")
    own = args_on_nodes(
        (),
        own_script=True,
        default_accum=3,
        ranks_per_node=ranks,
        original=["m", "w", "v"],
        nodes=["m", "w"],
    )
    assert own == (None, "only train_production.py can keep its global batch on fewer nodes")


def test_between_attempts_a_failure_is_not_the_jobs_end(controller) -> None:
    jobs, handle = controller.jobs, controller.handle
    end_attempt(jobs, 1, "failed", failure={"cause": "killed"}, last_step=12)
    # No controller holds the job: the failure is its end.
    status = job_status(jobs, jobs.find(JOB))
    assert (status.ongoing, status.line) == (False, "failed")
    # A live controller waiting to start attempt 2 (this process holds its lock).
    lock = take_lock(handle.lock_path)
    try:
        handle.write_state(
            ControllerState(
                phase=WAITING_TO_RETRY, attempt=1, next_attempt=2, retry_at=time.time() + 5.4
            )
        )
        status = job_status(jobs, jobs.find(JOB), now=time.time())
        assert status.ongoing
        assert status.line == "failed (attempt 1 of 3); attempt 2 starts in 5 s"
        assert status.to_json() == {"ongoing": True, "status_line": status.line}
        # Past its retries (chasing leftovers): the job has ended for good.
        handle.write_state(ControllerState(phase="cleanup", attempt=1))
        assert job_status(jobs, jobs.find(JOB)).ongoing is False
    finally:
        os.close(lock or -1)
