"""One attempt of a job started by Slurm (`--scheduler slurm`, or cluster.yaml's `scheduler`).

The launch playbook runs as for any job but starts nothing (ugro_launch_start false): each
node's job directory gets its code, launch.sh and supervise.sh. Then one sbatch script
(ugro.slurm.batch) goes to Slurm, which starts the supervisors when it allocates the nodes;
the attempt is `running` from the submission, with Slurm's job id in the history. The job's
controller follows it as any job, and Slurm's own state beside (ugro.controller.slurm_watch).
"""

from __future__ import annotations

from pathlib import Path

from ugro.core.cluster import Cluster
from ugro.core.errors import UgroError
from ugro.slurm import jobs as slurm_jobs
from ugro.slurm.batch import BatchJob, batch_script, unsafe_paths

SLURM = "slurm"


def batch_job(cluster: Cluster, job_id: str, attempt: int, nodes: list[str]) -> BatchJob:
    job_dirs = {name: f"{cluster.node(name).experiments_path}/{job_id}" for name in nodes}
    return BatchJob(
        job_id=job_id,
        attempt=attempt,
        partition=cluster.slurm.partition,
        nodes=nodes,
        job_dirs=job_dirs,
        output=f"{job_dirs[nodes[0]]}/logs/slurm-%j.out",
    )


def refusals(cluster: Cluster, job_id: str, attempt: int, nodes: list[str]) -> list[str]:
    """Why Slurm cannot take the attempt now (before anything is written on the nodes)."""
    return unsafe_paths(batch_job(cluster, job_id, attempt, nodes)) + (
        slurm_jobs.submission_refusals(cluster, nodes)
    )


def submit(
    cluster: Cluster, experiment_dir: Path, job_id: str, attempt: int, nodes: list[str]
) -> str:
    """Submit the attempt's batch script, kept beside the job's records; Slurm's job id."""
    script = batch_script(batch_job(cluster, job_id, attempt, nodes))
    kept = experiment_dir / "slurm" / f"attempt-{attempt}.sbatch"
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(script, encoding="utf-8")
    try:
        return slurm_jobs.submit(cluster, script)
    except UgroError as exc:
        raise UgroError(f"{job_id}: {exc.message}") from None
