"""A night of faults: one training run with --retries 3 meets a killed rank, a partitioned node
(healed) and a stopped rank, and still ends `succeeded` with the loss of an uninterrupted run.

Real training (train_production.py, the tiny Llama, gloo on the CPU) on the 3-node sandbox; each
fault as on real machines (a signal over SSH, the node's link cut). Each fault may cost at most
one checkpoint interval of steps: every attempt resumes from a checkpoint no older than that
before the step its predecessor had reached.
"""

from __future__ import annotations

import json
import re
import signal

import pytest

from tests.conftest import history_lines, run_ugro
from tests.integration.jobkit import (
    assert_nothing_left,
    final,
    finals_of,
    jobs_of,
    signal_one,
    wait_for,
)
from ugro.records.controller_files import ControllerHandle
from ugro.sandbox import faults

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

SAVE_EVERY = 6
TRAINING = [
    "--",
    "--max-steps",
    "48",
    "--logging-steps",
    "2",
    "--eval-strategy",
    "no",
    "--save-strategy",
    "steps",
    "--save-steps",
    str(SAVE_EVERY),
]


@pytest.fixture(scope="module")
def env(sandbox) -> dict[str, str]:
    return {"UGRO_CONFIG": str(sandbox.cluster_file)}


def reached(sandbox, job_id: str, attempt: int, step: int) -> None:
    """Until `attempt` runs and every rank has completed `step`."""
    jobs = jobs_of(sandbox)
    watcher = ControllerHandle(jobs.experiment_dir(job_id))

    def there() -> bool:
        record = jobs.find(job_id)
        steps = dict(watcher.state().steps)
        return (
            record.attempt == attempt
            and record.state == "running"
            and watcher.state().attempt == attempt
            and len(steps) == 3
            and min(steps.values()) >= step
        )

    wait_for(there, 240, f"{job_id} attempt {attempt} at step {step}")


def ended_attempt(sandbox, job_id: str, attempt: int) -> dict:
    jobs = jobs_of(sandbox)
    return wait_for(
        lambda: next(
            (
                e
                for e in history_lines(jobs)
                if e["job_id"] == job_id
                and e.get("attempt") == attempt
                and e.get("state") in ("failed", "lost")
            ),
            None,
        ),
        120,
        f"attempt {attempt} ending",
    )


def test_three_faults_in_one_night_still_end_succeeded_with_the_same_loss(sandbox, env) -> None:
    calm = run_ugro("launch", "--name", "calm", *TRAINING, env=env, timeout=600)
    assert calm.returncode == 0, calm.stdout[-2000:] + calm.stderr[-2000:]
    calm_loss = json.loads(run_ugro("results", "calm", "--json", env=env).stdout)["final_loss"]

    started = run_ugro(
        "launch",
        "--name",
        "chaos",
        "--retries",
        "3",
        "--hang-timeout",
        "15",
        "--detach",
        *TRAINING,
        env=env,
    )
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    job_id = started.stdout.split("Launched ", 1)[1].split(" ", 1)[0]

    # 1: a rank killed.
    reached(sandbox, job_id, 1, SAVE_EVERY + 2)
    signal_one(sandbox, "gpu1", job_id, "rank", signal.SIGKILL)
    assert ended_attempt(sandbox, job_id, 1)["failure"]["cause"] == "killed"

    # 2: a node cut off, then back.
    reached(sandbox, job_id, 2, 2 * SAVE_EVERY + 2)
    faults.fault(sandbox.name, "gpu2", "partition")
    try:
        assert ended_attempt(sandbox, job_id, 2)["failure"]["cause"] == "unreachable"
    finally:
        faults.fault(sandbox.name, "gpu2", "heal")

    # 3: a rank stopped.
    reached(sandbox, job_id, 3, 3 * SAVE_EVERY + 2)
    signal_one(sandbox, "gpu2", job_id, "rank", signal.SIGSTOP)
    assert ended_attempt(sandbox, job_id, 3)["failure"]["cause"] == "hang"

    record = final(sandbox, job_id, timeout=300)
    assert (record.state, record.attempt) == ("succeeded", 4)
    assert finals_of(sandbox, job_id) == [
        (1, "failed"),
        (2, "lost"),
        (3, "failed"),
        (4, "succeeded"),
    ]
    results = json.loads(run_ugro("results", job_id, "--json", env=env).stdout)
    assert results["steps"] == 48
    assert results["final_loss"] == pytest.approx(calm_loss, abs=1e-3)

    # Each attempt resumed from a checkpoint at most one interval behind its predecessor.
    history = [e for e in history_lines(jobs_of(sandbox)) if e["job_id"] == job_id]
    reached_steps = {e["attempt"]: e["last_step"] for e in history if "last_step" in e}
    log = (jobs_of(sandbox).experiment_dir(job_id) / "logs" / "gpu-master.rank0.log").read_text()
    resumed = [
        int(match) if match else 0
        for match in re.findall(r'"resume_from": (?:"[^"]*checkpoint-(\d+)"|null)', log)
    ]
    assert len(resumed) == 4, resumed
    for attempt in (2, 3, 4):
        assert resumed[attempt - 1] >= reached_steps[attempt - 1] - SAVE_EVERY, (
            attempt,
            resumed,
            reached_steps,
        )
    assert_nothing_left(sandbox, job_id)
