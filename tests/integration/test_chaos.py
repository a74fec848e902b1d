"""A night of faults: one training run with --retries 3 meets a killed rank, a partitioned node
(healed) and a stopped rank, and still ends `succeeded` with the loss of the session's
uninterrupted reference run (tests/integration/conftest.py).

Real training (train_production.py, the tiny Llama, gloo on the CPU) on the 3-node sandbox; each
fault as on real machines (a signal over SSH, the node's link cut). Each fault is also judged
on its own, as a user would meet it once: the cause named, how soon every rank was down (a
killed rank) or the node known lost (a partition), the lost node's leftovers ended once it
answered, and nothing of the job left on any node. Each fault may cost at most one checkpoint
interval of steps: every attempt resumes from a checkpoint no older than that before the step
its predecessor had reached. Retries wait 1 s here (communication.retry_backoff_seconds), not
the default 5: the backoff is not what is tested.
"""

from __future__ import annotations

import json
import re
import signal

import pytest
import yaml

from tests.conftest import history_lines, run_ugro
from tests.integration.conftest import REFERENCE_SAVE_EVERY, REFERENCE_STEPS, REFERENCE_TRAINING
from tests.integration.jobkit import (
    TAGGED,
    assert_nothing_left,
    final,
    finals_of,
    jobs_of,
    on_node,
    signal_one,
    wait_for,
)
from ugro.records.controller_files import ControllerHandle
from ugro.sandbox import faults

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

TRAINING = REFERENCE_TRAINING
SAVE_EVERY = REFERENCE_SAVE_EVERY
MAX_STEPS = REFERENCE_STEPS


@pytest.fixture(scope="module")
def env(sandbox, tmp_path_factory) -> dict[str, str]:
    """The sandbox's cluster (the same nodes and data), its retries waiting 1 s."""
    data = yaml.safe_load(sandbox.cluster_file.read_text())
    data["cluster"]["communication"]["retry_backoff_seconds"] = 1
    path = tmp_path_factory.mktemp("chaos") / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    return {"UGRO_CONFIG": str(path)}


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


def test_three_faults_in_one_night_still_end_succeeded_with_the_same_loss(
    sandbox, env, reference_run
) -> None:
    calm = run_ugro("results", reference_run.job_id, "--json", env=env)
    calm_loss = json.loads(calm.stdout)["final_loss"]

    started = run_ugro(
        "launch",
        "--name",
        "chaos",
        "--retries",
        "3",
        "--hang-timeout",
        "8",  # a step takes about a quarter of a second here, a checkpoint not much more
        "--detach",
        *TRAINING,
        env=env,
    )
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    job_id = started.stdout.split("Launched ", 1)[1].split(" ", 1)[0]

    # 1: a rank killed: the job's attempt fails, every rank down within 10 s.
    reached(sandbox, job_id, 1, SAVE_EVERY + 2)
    signal_one(sandbox, "gpu1", job_id, "rank", signal.SIGKILL)
    first = ended_attempt(sandbox, job_id, 1)
    failure = first["failure"]
    assert (failure["node"], failure["rank"], failure["cause"]) == ("gpu1", 1, "killed")
    assert first["timeline"]["down"] - first["timeline"]["ended"] <= 10, first["timeline"]

    # 2: a node cut off: lost within 15 s, the others clean at once; then it comes back.
    reached(sandbox, job_id, 2, 2 * SAVE_EVERY + 2)
    faults.fault(sandbox.name, "gpu2", "partition")
    try:
        second = ended_attempt(sandbox, job_id, 2)
        assert (second["failure"]["node"], second["failure"]["cause"]) == ("gpu2", "unreachable")
        timeline = second["timeline"]
        assert timeline["detected"] - timeline["ended"] <= 15, timeline
        assert timeline["down"] - timeline["detected"] <= 30, timeline
        assert second["pending_cleanup"] == ["gpu2"]
        # gpu2's ranks, on a real host, are still there: only the reachable nodes are clean.
        for node in ("gpu-master", "gpu1"):
            assert json.loads(on_node(sandbox, node, TAGGED, job_id).stdout) == [], node
    finally:
        faults.fault(sandbox.name, "gpu2", "heal")
    # Whatever gpu2 still ran (torchrun's agent there may have given up on the lost store and
    # ended its ranks itself) is ended and checked once it answers, before it trains again.
    cleaned = wait_for(
        lambda: jobs_of(sandbox).find(job_id).events("leftovers_cleaned"),
        60,
        "gpu2's leftovers cleaned after heal",
    )
    assert cleaned[0]["node"] == "gpu2" and cleaned[0]["left"] == []

    # 3: a rank stopped, one step into attempt 3 (resumed from the checkpoint attempt 2 made):
    # the signal lands long before the run could end.
    reached(sandbox, job_id, 3, 2 * SAVE_EVERY + 1)
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
    assert results["steps"] == MAX_STEPS
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
