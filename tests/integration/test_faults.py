"""Faults on the 3-node sandbox, each as a user would meet it, each judged by the job's controller.

Every node is a real host (its own network, hostname and PID namespace, reached over SSH as its
user); faults are injected as they happen on real machines: a process killed or stopped on its
node (over SSH), a node partitioned or powered off (the sandbox's link and namespace). Each test
asserts the final state, the cause named, the detection and teardown times from the history's
timeline, and that no process of the job is left on any node, checked over SSH as the node's
user. A killed rank and a partitioned node are met in test_chaos.py, within one training run
that goes on through them; a node powering off, in the retry that goes on without it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import history_lines, run_ugro
from tests.integration.conftest import ssh_as
from tests.integration.jobkit import (
    BEATING,
    GHOST,
    assert_nothing_left,
    final,
    finals_of,
    jobs_of,
    launch,
    signal_one,
    tagged_everywhere,
    wait_for,
    wait_running,
)
from ugro.records.controller_files import ControllerHandle
from ugro.sandbox import faults

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


@pytest.fixture(scope="module")
def env(sandbox) -> dict[str, str]:
    return {"UGRO_CONFIG": str(sandbox.cluster_file)}


@pytest.fixture(scope="module")
def beating(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scripts") / "beating.py"
    path.write_text(BEATING)
    return path


def test_an_agent_killed_alone_has_its_orphaned_workers_killed(sandbox, env, beating) -> None:
    job_id = launch(env, "killagent", beating)
    wait_running(sandbox, job_id)
    signal_one(sandbox, "gpu2", job_id, "agent", signal.SIGKILL)
    record = final(sandbox, job_id)
    assert record.state == "failed"
    assert (record.detail["failure"]["node"], record.detail["failure"]["cause"]) == (
        "gpu2",
        "agent_killed",
    )
    assert record.detail["teardown"]["gpu2"]["signalled"] >= 1  # the orphan
    assert_nothing_left(sandbox, job_id)


def test_a_stopped_rank_is_a_hang_and_the_follower_says_stalled(sandbox, env, beating) -> None:
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ugro",
            "launch",
            "--name",
            "hang",
            "--script",
            str(beating),
            "--hang-timeout",
            "12",
        ],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        job_id = wait_for(
            lambda: next(
                (r.job_id for r in jobs_of(sandbox).records().values() if r.name == "hang"), None
            ),
            60,
            "the hang job recorded",
        )
        wait_running(sandbox, job_id)
        signal_one(sandbox, "gpu2", job_id, "rank", signal.SIGSTOP)
        out, err = follower.communicate(timeout=120)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 1, out[-2000:] + err[-2000:]
    assert "stalled for" in err
    assert "gpu2 rank 2" in err and "stopped (SIGSTOP" in err
    assert "Traceback" not in err
    record = jobs_of(sandbox).find(job_id)
    assert record.detail["failure"]["cause"] == "hang"
    assert_nothing_left(sandbox, job_id)


def test_reset_ends_every_jobs_processes_and_health_names_leftovers(sandbox, env, beating) -> None:
    job_id = launch(env, "resetme", beating)
    wait_running(sandbox, job_id)
    # A leftover of a job that no longer runs, on gpu1.
    gpu1 = sandbox.node("gpu1")
    orphan = ssh_as(sandbox, gpu1, "python3", "-c", GHOST)
    assert orphan.returncode == 0, orphan.stderr
    health = run_ugro("health", env=env)
    assert "gpu1: processes of ghost_20200101_000000, which is not running any more" in (
        " ".join(health.stderr.split())
    )
    done = run_ugro("reset", "--yes", env=env, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"{job_id}: stopped" in done.stdout
    assert "ghost_20200101_000000" in done.stdout
    assert_nothing_left(sandbox, job_id)
    assert tagged_everywhere(sandbox, "ghost_20200101_000000")["gpu1"] == []
    assert finals_of(sandbox, job_id) == [(1, "stopped")]


def test_a_stop_while_following_is_stopped_once_and_resume_is_its_next_attempt(
    sandbox, env, beating
) -> None:
    follower = subprocess.Popen(
        [sys.executable, "-m", "ugro", "launch", "--name", "followed", "--script", str(beating)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        job_id = wait_for(
            lambda: next(
                (r.job_id for r in jobs_of(sandbox).records().values() if r.name == "followed"),
                None,
            ),
            60,
            "the followed job recorded",
        )
        wait_running(sandbox, job_id)
        stopped = run_ugro("stop", job_id, env=env)
        assert stopped.returncode == 0, stopped.stderr
        _out, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert "Traceback" not in err
    assert "stopped by the user" in err
    assert finals_of(sandbox, job_id) == [(1, "stopped")]
    assert_nothing_left(sandbox, job_id)
    # The stopped job, resumed: its next attempt, with a controller of its own again.
    resumed = run_ugro("launch", "--resume", job_id, "--detach", env=env)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert f"Resumed {job_id}" in resumed.stdout
    wait_running(sandbox, job_id)
    record = jobs_of(sandbox).find(job_id)
    assert (record.state, record.attempt) == ("running", 2)
    log = jobs_of(sandbox).experiment_dir(job_id) / "logs" / "gpu-master.rank0.log"
    assert "attempt 2 step" in log.read_text()
    assert run_ugro("stop", job_id, env=env).returncode == 0
    assert finals_of(sandbox, job_id) == [(1, "stopped"), (2, "stopped")]
    assert_nothing_left(sandbox, job_id)


def test_a_second_launch_on_busy_nodes_is_refused_then_forced_each_on_its_own_port(
    sandbox, env, beating
) -> None:
    first = launch(env, "busy", beating)
    refused = run_ugro(
        "launch", "--name", "intruder", "--script", str(beating), "--detach", env=env
    )
    assert refused.returncode == 1
    assert f"run UGRO job {first}" in refused.stderr and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    # Two forced launches of one name in the same second: each its own id, directory and port.
    argv = [sys.executable, "-m", "ugro", "launch", "--name", "twin", "--script", str(beating)]
    launches = [
        subprocess.Popen(
            [*argv, "--detach", "--force"],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=300) for process in launches]
    assert [process.returncode for process in launches] == [0, 0], outputs
    twins = [out.split("Launched ", 1)[1].split(" ", 1)[0] for out, _ in outputs]
    assert len(set(twins)) == 2
    jobs = jobs_of(sandbox)
    assert len({jobs.config(j).rendezvous_port for j in (first, *twins)}) == 3
    for job_id in twins:
        wait_running(sandbox, job_id)
    for job_id in (first, *twins):
        assert run_ugro("stop", job_id, env=env).returncode == 0
        assert_nothing_left(sandbox, job_id)


def test_a_controller_killed_at_any_time_never_starts_an_attempt_twice(
    sandbox, env, beating
) -> None:
    job_id = launch(env, "crashy", beating, "--retries", "2")
    wait_running(sandbox, job_id)
    jobs = jobs_of(sandbox)
    watcher = ControllerHandle(jobs.experiment_dir(job_id))

    def kill_controller() -> None:
        os.kill(int(watcher.state().pid), signal.SIGKILL)
        wait_for(lambda: not watcher.alive(), 10, "the controller gone")

    def revive() -> None:
        status = run_ugro("status", env=env)
        assert status.returncode == 0 and f"{job_id}: its controller had stopped" in status.stderr

    # While it runs: the controller dies, then a rank does while nobody watches. The next look
    # at the job starts a controller again, which finds the failure on the nodes.
    kill_controller()
    signal_one(sandbox, "gpu1", job_id, "rank", signal.SIGKILL)
    revive()
    wait_for(
        lambda: (r := jobs.find(job_id)).attempt == 1 and r.state == "failed",
        120,
        "attempt 1 failed",
    )
    assert jobs.find(job_id).detail["failure"]["node"] == "gpu1"
    # Between attempts: attempt 1 failed, the retry waits out its backoff.
    wait_for(
        lambda: watcher.state().phase == "waiting to retry" and jobs.find(job_id).state == "failed",
        60,
        "a retry pending",
    )
    kill_controller()
    revive()
    wait_for(
        lambda: (r := jobs.find(job_id)).attempt == 2 and r.state == "running",
        120,
        "attempt 2 running",
    )
    wait_running(sandbox, job_id)
    # In the middle of a launch: the controller itself runs attempt 3's launch playbook.
    signal_one(sandbox, "gpu2", job_id, "rank", signal.SIGKILL)
    wait_for(
        lambda: watcher.state().phase == "launching" and jobs.find(job_id).attempt == 3,
        120,
        "attempt 3 launching",
    )
    kill_controller()
    revive()
    record = final(sandbox, job_id)
    assert finals_of(sandbox, job_id) == [(1, "failed"), (2, "failed"), (3, "lost")]
    assert "interrupted" in record.detail["reason"]
    starts = [
        e["attempt"]
        for e in history_lines(jobs)
        if e["job_id"] == job_id and e.get("state") == "launching"
    ]
    assert starts == [1, 2, 3]
    assert_nothing_left(sandbox, job_id)


def test_a_node_that_powers_off_is_blamed_and_the_retry_goes_on_without_it(sandbox, env) -> None:
    """gpu2 powers off for good: the node is lost (not the peers whose collectives failed
    first), and --min-nodes 2 lets attempt 2 train on the master and gpu1, with gradient
    accumulation raised so that the global batch stays 3 ranks x 2 = 6."""
    started = run_ugro(
        "launch",
        "--name",
        "shrink",
        "--retries",
        "1",
        "--min-nodes",
        "2",
        "--detach",
        "--",
        "--max-steps",
        "16",
        "--grad-accum",
        "2",
        "--logging-steps",
        "2",
        "--eval-strategy",
        "no",
        "--save-strategy",
        "steps",
        "--save-steps",
        "4",
        env=env,
    )
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    job_id = started.stdout.split("Launched ", 1)[1].split(" ", 1)[0]
    wait_running(sandbox, job_id, steps=5)
    faults.fault(sandbox.name, "gpu2", "down")
    try:
        record = final(sandbox, job_id, timeout=300)
    finally:
        faults.fault(sandbox.name, "gpu2", "up")
    assert (record.state, record.attempt) == ("succeeded", 2)
    assert finals_of(sandbox, job_id) == [(1, "lost"), (2, "succeeded")]
    lost = next(
        e
        for e in history_lines(jobs_of(sandbox))
        if e["job_id"] == job_id and e.get("state") == "lost"
    )
    assert (lost["failure"]["node"], lost["failure"]["cause"]) == ("gpu2", "unreachable")
    # The job ended when gpu2 went silent, not when someone asked.
    assert lost["timeline"]["detected"] - lost["timeline"]["ended"] <= 15
    assert record.detail["nodes"] == ["gpu-master", "gpu1"]
    attempt = jobs_of(sandbox).config(job_id).attempts["2"]
    assert attempt["args"][-2:] == ["--grad-accum", "3"]
    log = (jobs_of(sandbox).experiment_dir(job_id) / "logs" / "gpu-master.rank0.log").read_text()
    settings = [
        json.loads(line.split(" settings: ", 1)[1])
        for line in log.splitlines()
        if " settings: " in line
    ]
    assert [(s["world_size"], s["grad_accum"]) for s in settings] == [(3, 2), (2, 3)]
