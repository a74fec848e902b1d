"""A UGRO job as Slurm runs it: the sbatch and steps scripts (golden files), the batch script
waiting for UGRO's launch, a step on a node it was not meant for, the paths the scripts cannot
carry, what squeue and sinfo say, and how the controller reads Slurm's state beside the
heartbeats. Jobs run through the real Slurm in tests/integration/test_slurm.py."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from ugro.controller.slurm_watch import ENDED_GRACE_S, SlurmFollower
from ugro.core.cluster import Cluster
from ugro.slurm.batch import (
    WRONG_NODE_EXIT,
    BatchJob,
    allocated_in_rank_order,
    batch_script,
    steps_path,
    steps_script,
    unsafe_paths,
)
from ugro.slurm.deploy import NodeState, gpu_count
from ugro.slurm.jobs import SlurmJob, gpus_per_node, parse_squeue

GOLDEN = Path(__file__).parent / "golden" / "slurm"
DIRS = {
    "gpu-master": "/home/gpuadmin/UGRO/experiments/exp1_20261205_101010",
    "gpu1": "/home/ob/projects/UGRO/experiments/exp1_20261205_101010",
    "gpu2": "/home/ollie/projects/UGRO/experiments/exp1_20261205_101010",
}
# The seed's cluster: named nodes, one GPU each.
JOB = BatchJob(
    job_id="exp1_20261205_101010",
    attempt=2,
    partition="gpus",
    job_dirs=DIRS,
    nodes=["gpu-master", "gpu1", "gpu2"],
    gpus_per_node=1,
)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UGRO_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_the_sbatch_script_golden() -> None:
    text = batch_script(JOB)
    check_golden("job.sbatch", text)
    assert "#SBATCH --nodelist=gpu-master,gpu1,gpu2\n" in text
    assert "#SBATCH --gres=gpu:1\n" in text


def test_a_count_of_nodes_lets_slurm_pick_them() -> None:
    """A job for any 2 nodes (a retry: at least 1, gpu2 left out), on CPU nodes."""
    job = BatchJob("j", 1, "ugro", DIRS, count=2)
    assert "#SBATCH --nodes=2\n" in batch_script(job)
    assert "nodelist" not in batch_script(job) and "gres" not in batch_script(job)
    retry = BatchJob("j", 2, "ugro", DIRS, count=2, fewest=1, exclude=["gpu2"])
    assert retry.node_request() == ["--nodes=1-2", "--exclude=gpu2"]


def test_the_steps_script_golden() -> None:
    check_golden("steps.sh", steps_script(DIRS))


def test_bash_accepts_both_scripts() -> None:
    for text in (batch_script(JOB), steps_script(DIRS)):
        checked = subprocess.run(["bash", "-n"], input=text, text=True, check=False)
        assert checked.returncode == 0


@pytest.mark.parametrize(("node", "expected"), [("gpu1", 0), ("gpu2", WRONG_NODE_EXIT)])
def test_a_step_runs_its_own_nodes_supervisor_and_no_other(
    tmp_path: Path, node: str, expected: int
) -> None:
    """The steps script as srun runs it on a node named `node`: gpu1 runs its supervisor;
    gpu2, which UGRO did not launch on, runs nothing."""
    (tmp_path / "supervise.sh").write_text("echo supervised; exit 0\n")
    script = tmp_path / "steps.sh"
    script.write_text(steps_script({"gpu-master": "/nonexistent", "gpu1": str(tmp_path)}))
    done = subprocess.run(
        ["/bin/bash", str(script)],
        env={"SLURMD_NODENAME": node},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == expected
    assert ("supervised" in done.stdout) == (expected == 0)


def test_the_batch_script_starts_its_steps_once_ugro_writes_them(tmp_path: Path) -> None:
    """The batch script run as Slurm runs it on gpu1, with srun standing in (this process has
    no Slurm): it logs into gpu1's job directory, waits for the steps and then runs them."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\necho "srun $*"\n')  # a stand-in for srun
    (bin_dir / "srun").chmod(0o755)
    job_dir = tmp_path / "job"
    job = BatchJob("j", 1, "ugro", {"gpu1": str(job_dir)}, count=1)
    env = {"SLURMD_NODENAME": "gpu1", "SLURM_JOB_ID": "41", "PATH": f"{bin_dir}:/usr/bin:/bin"}
    running = subprocess.Popen(["/bin/bash", "-c", batch_script(job)], env=env)
    steps = Path(steps_path(str(job_dir), "41"))
    deadline = time.monotonic() + 10
    while not (job_dir / "logs" / "slurm-41.out").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.poll() is None  # still waiting for UGRO
    steps.write_text("true\n")
    assert running.wait(timeout=10) == 0
    said = (job_dir / "logs" / "slurm-41.out").read_text()
    assert f"srun --kill-on-bad-exit=0 --ntasks-per-node=1 /bin/bash {steps}" in said


@pytest.mark.parametrize("bad", ["/home/o b/exp", "/home/it's/exp", '/home/"q"/exp', "/a\nb"])
def test_a_job_directory_the_scripts_cannot_carry_is_refused(bad: str) -> None:
    job = BatchJob("j", 1, "p", {"gpu1": bad}, nodes=["gpu1"])
    assert unsafe_paths(job.job_dirs)[0].startswith("gpu1: its job directory")
    with pytest.raises(ValueError, match="gpu1"):
        batch_script(job)


def test_an_allocation_in_rank_order_and_the_gpus_a_job_asks_each_node() -> None:
    assert allocated_in_rank_order(["gpu2", "gpu-master"], ["gpu-master", "gpu1", "gpu2"]) == [
        "gpu-master",
        "gpu2",
    ]
    assert [gpu_count(g) for g in ("gpu:2", "gpu:rtx4070:1(S:0)", "(null)", "mps:100")] == [
        2, 1, 0, 0,
    ]  # fmt: skip
    states = {n: NodeState(n, "idle", "none", gpus=g) for n, g in [("a", 2), ("b", 1), ("c", 0)]}
    assert gpus_per_node(states, ["a", "b"]) == 1
    assert gpus_per_node(states, ["a", "c"]) == 0  # a CPU node among them: none asked
    assert gpus_per_node(states, ["a"], {"a": 1}) == 1  # cluster.yaml's nproc_per_node: 1


def test_squeue_lines() -> None:
    jobs = parse_squeue(
        "12|exp1_x|PENDING|Resources||n/a\n13|exp2_y|RUNNING|None|gpu[1-2]|gpu1\nnoise\n"
    )
    assert [(j.slurm_id, j.state, j.reason, j.batch_host) for j in jobs] == [
        ("12", "PENDING", "Resources", "n/a"),
        ("13", "RUNNING", "None", "gpu1"),
    ]
    assert jobs[0].pending and not jobs[0].allocated
    assert jobs[1].allocated and not jobs[1].ended
    assert SlurmJob("1", "x", "NODE_FAIL", "None").ended


def follower(seen: SlurmJob | None, *, forgotten: bool = False) -> SlurmFollower:
    """A follower that has already asked Slurm (it asks again only after ASK_EVERY_S)."""
    watch = SlurmFollower(Cluster.__new__(Cluster), "12")
    watch.seen, watch.forgotten = seen, forgotten
    return watch


def test_a_pending_job_shows_why_it_waits() -> None:
    assert follower(SlurmJob("12", "x", "PENDING", "Priority")).note() == (
        "waiting in Slurm's queue as job 12 (Priority)"
    )
    assert follower(SlurmJob("12", "x", "PENDING", "None")).note() == (
        "waiting in Slurm's queue as job 12"
    )
    assert follower(SlurmJob("12", "x", "RUNNING", "None")).note() == ""


def test_a_job_slurm_ends_before_it_starts_fails_at_once() -> None:
    end = follower(SlurmJob("12", "x", "CANCELLED", "None")).ended(100.0, started=False)
    assert end is not None and end.state == "failed"
    assert end.reason == "Slurm ended its job 12 before it started (CANCELLED)"
    assert follower(SlurmJob("12", "x", "RUNNING", "None")).ended(100.0, started=False) is None


def test_after_it_started_the_heartbeats_get_a_grace_to_say_why() -> None:
    watch = follower(SlurmJob("12", "x", "NODE_FAIL", "None"))
    assert watch.ended(100.0, started=True) is None
    end = watch.ended(100.0 + ENDED_GRACE_S, started=True)
    assert end is not None and (end.state, end.reason) == (
        "lost",
        "Slurm ended its job 12 (NODE_FAIL)",
    )
    forgotten = follower(None, forgotten=True).ended(5.0, started=False)
    assert forgotten is not None and "(ended)" in forgotten.reason
