"""A job's attempts started by Slurm (`--scheduler slurm`, or cluster.yaml's `scheduler`).

Each attempt is one sbatch script (ugro.slurm.batch) submitted first: the job waits `queued`
in Slurm's queue, with Slurm's job id in the history, for the nodes it names or for any
`count` of them. When Slurm allocates them, the job's controller (ugro.controller.slurm_start)
runs the launch playbook on exactly those nodes, starting nothing (ugro_launch_start false),
and then `release`s the batch script, which starts every node's supervisor through srun. From
then on the attempt is followed as any job, with Slurm's own state beside
(ugro.controller.slurm_watch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ugro.core.cluster import Cluster
from ugro.core.errors import UgroError, UsageError
from ugro.slurm import jobs as slurm_jobs
from ugro.slurm.batch import (
    BatchJob,
    allocated_in_rank_order,
    batch_script,
    steps_path,
    steps_script,
    unsafe_paths,
)
from ugro.slurm.jobs import SlurmJob

SLURM = "slurm"


@dataclass(frozen=True)
class Allocation:
    """The nodes Slurm gave an attempt."""

    slurm_id: str
    nodes: list[str]  # in the cluster's rank order: the first leads (rendezvous, metrics)
    batch_host: str  # where the batch script waits for its steps


def job_dirs(cluster: Cluster, job_id: str, nodes: Sequence[str]) -> dict[str, str]:
    return {name: f"{cluster.node(name).experiments_path}/{job_id}" for name in nodes}


def submit(
    cluster: Cluster,
    experiment_dir: Path,
    job_id: str,
    attempt: int,
    *,
    nodes: Sequence[str] = (),
    count: int = 0,
    fewest: int = 0,
    exclude: Sequence[str] = (),
) -> str:
    """Submit an attempt that wants these `nodes`, or any `count` (at least `fewest`) but the
    `exclude`d; the batch script is kept beside the job's records. Slurm's job id; a refusal
    (UsageError) names each node in the way and its fix, before anything reaches Slurm."""
    candidates = list(nodes) or [n for n in cluster.node_names if n not in exclude]
    if count > len(candidates):
        raise UsageError(
            f"--count {count}: Slurm has {len(candidates)} of {cluster.name}'s nodes to pick from"
        )
    problems, states = slurm_jobs.submission_refusals(cluster, candidates, named=bool(nodes))
    dirs = job_dirs(cluster, job_id, candidates)
    problems = unsafe_paths(dirs) + problems
    if problems:
        raise UsageError(f"{job_id} refused: {'; '.join(problems)}")
    script = batch_script(
        BatchJob(
            job_id=job_id,
            attempt=attempt,
            partition=cluster.slurm.partition,
            job_dirs=dirs,
            nodes=list(nodes),
            count=count,
            fewest=fewest,
            exclude=list(exclude),
            gpus_per_node=slurm_jobs.gpus_per_node(
                states, candidates, {n: cluster.node(n).nproc_per_node for n in candidates}
            ),
        )
    )
    kept = experiment_dir / "slurm" / f"attempt-{attempt}.sbatch"
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(script, encoding="utf-8")
    try:
        return slurm_jobs.submit(cluster, script)
    except UgroError as exc:
        raise UgroError(f"{job_id}: {exc.message}") from None


def allocation(cluster: Cluster, seen: SlurmJob) -> Allocation:
    """The nodes of an attempt Slurm has allocated (seen RUNNING in squeue)."""
    given = slurm_jobs.hostnames(cluster, seen.nodes)
    unknown = sorted(set(given) - set(cluster.node_names))
    if unknown:
        raise UgroError(
            f"Slurm gave job {seen.slurm_id} {', '.join(unknown)}, which cluster.yaml does not "
            "name; is slurm.conf another cluster's? `ugro slurm up` rewrites it"
        )
    if seen.batch_host not in given:
        raise UgroError(
            f"Slurm runs job {seen.slurm_id}'s batch script on {seen.batch_host!r}, not one of "
            f"its nodes ({', '.join(given)})"
        )
    return Allocation(
        seen.slurm_id, allocated_in_rank_order(given, cluster.node_names), seen.batch_host
    )


def release(cluster: Cluster, job_id: str, given: Allocation) -> None:
    """Let the batch script start the supervisors the launch wrote on the allocation."""
    dirs = job_dirs(cluster, job_id, given.nodes)
    slurm_jobs.write_on_node(
        cluster,
        given.batch_host,
        steps_path(job_dirs(cluster, job_id, [given.batch_host])[given.batch_host], given.slurm_id),
        steps_script(dirs),
    )
