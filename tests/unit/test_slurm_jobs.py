"""A UGRO job as Slurm runs it: the sbatch script (golden file), what a step checks, the paths
srun cannot pass, what squeue says, and how the controller reads Slurm's state beside the
heartbeats. Jobs run through the real Slurm in tests/integration/test_slurm.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ugro.controller.slurm_watch import ENDED_GRACE_S, SlurmFollower
from ugro.core.cluster import Cluster
from ugro.slurm.batch import WRONG_NODE_EXIT, BatchJob, batch_script, multi_prog, unsafe_paths
from ugro.slurm.jobs import SlurmJob, parse_squeue

GOLDEN = Path(__file__).parent / "golden" / "slurm"
JOB = BatchJob(
    job_id="exp1_20261205_101010",
    attempt=2,
    partition="gpus",
    nodes=["gpu-master", "gpu1", "gpu2"],
    job_dirs={
        "gpu-master": "/home/gpuadmin/UGRO/experiments/exp1_20261205_101010",
        "gpu1": "/home/ob/projects/UGRO/experiments/exp1_20261205_101010",
        "gpu2": "/home/ollie/projects/UGRO/experiments/exp1_20261205_101010",
    },
    output="/home/gpuadmin/UGRO/experiments/exp1_20261205_101010/logs/slurm-%j.out",
)


def test_the_sbatch_script_golden() -> None:
    text = batch_script(JOB)
    path = GOLDEN / "job.sbatch"
    if os.environ.get("UGRO_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()
    assert "#SBATCH --nodelist=gpu-master,gpu1,gpu2\n" in text
    assert text.count("ugro-step ") == 3


def test_bash_accepts_the_script() -> None:
    checked = subprocess.run(["bash", "-n"], input=batch_script(JOB), text=True, check=False)
    assert checked.returncode == 0


@pytest.mark.parametrize(("node", "expected"), [("gpu1", 0), ("gpu2", WRONG_NODE_EXIT)])
def test_a_step_runs_only_on_the_node_it_was_meant_for(
    tmp_path: Path, node: str, expected: int
) -> None:
    """The step's own words, run as srun runs them on a node named `node`: task 1 is gpu1's."""
    supervisor = tmp_path / "supervise.sh"
    supervisor.write_text("exit 0\n")
    job = BatchJob(
        "j", 1, "p", ["gpu-master", "gpu1"], {"gpu-master": "/x", "gpu1": str(tmp_path)}, "/o"
    )
    line = multi_prog(job).splitlines()[1]
    step = line.split("'")[1]
    args = line.split("'")[2].split()
    done = subprocess.run(
        ["/bin/bash", "-c", step, *args], env={"SLURMD_NODENAME": node}, check=False
    )
    assert done.returncode == expected


@pytest.mark.parametrize("bad", ["/home/o b/exp", "/home/it's/exp", '/home/"q"/exp', "/a\nb"])
def test_a_job_directory_srun_cannot_pass_is_refused(bad: str) -> None:
    job = BatchJob("j", 1, "p", ["gpu1"], {"gpu1": bad}, "/o")
    assert unsafe_paths(job) and unsafe_paths(job)[0].startswith("gpu1: its job directory")
    with pytest.raises(ValueError, match="gpu1"):
        batch_script(job)


def test_squeue_lines() -> None:
    jobs = parse_squeue("12|exp1_x|PENDING|Resources|\n13|exp2_y|RUNNING|None|gpu[1-2]\nnoise\n")
    assert [(j.slurm_id, j.state, j.reason) for j in jobs] == [
        ("12", "PENDING", "Resources"),
        ("13", "RUNNING", "None"),
    ]
    assert jobs[0].pending and not jobs[1].ended
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
