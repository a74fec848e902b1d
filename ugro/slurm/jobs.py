"""UGRO's jobs in Slurm: submit, follow, cancel, and the checks before a submission.

Every Slurm command runs on the master (where slurmctld is and UGRO runs), as its user: the
job user (ugro.slurm.users), whom Slurm runs the job as on every node.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from ugro.core.cluster import Cluster
from ugro.core.errors import UgroError
from ugro.nodes.ssh import on_node
from ugro.slurm.deploy import node_states

COMMAND_TIMEOUT_S = 15.0
# Slurm's job states that end a job (squeue --states=all shows them for MinJobAge).
ENDED = frozenset(
    {
        "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
        "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT",
    }
)  # fmt: skip


@dataclass(frozen=True)
class SlurmJob:
    slurm_id: str
    name: str
    state: str  # PENDING, RUNNING, COMPLETING, or one of ENDED
    reason: str  # why it waits (Resources, Priority, ReqNodeNotAvail...), "None" when it runs
    nodes: str = ""

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def pending(self) -> bool:
        return self.state == "PENDING"


def _run(
    cluster: Cluster, argv: list[str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            on_node(cluster, cluster.master, argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        raise UgroError(
            f"{cluster.master.name}: no {argv[0]} here; deploy Slurm with `ugro slurm up`"
        ) from None
    except subprocess.TimeoutExpired:
        raise UgroError(f"{cluster.master.name}: {argv[0]} gave no answer within 15 s") from None


def _said(done: subprocess.CompletedProcess[str]) -> str:
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {done.returncode}"


def submission_refusals(cluster: Cluster, nodes: Sequence[str]) -> list[str]:
    """Why the job cannot go to Slurm now, one line per cause, each naming the node and the fix:
    Slurm not answering, a node it does not know or reports down, a node UGRO reaches as
    another user than the one Slurm runs jobs as."""
    try:
        states = node_states(cluster)
    except UgroError as exc:
        return [f"--scheduler slurm: {exc.message}"]
    problems = []
    for name in nodes:
        state = states.get(name)
        if state is None:
            problems.append(
                f"{name}: Slurm does not know it; `ugro slurm up` writes every node into slurm.conf"
            )
        elif not state.takes_jobs:
            why = f" ({state.reason})" if state.reason not in ("", "none") else ""
            problems.append(
                f"{name}: Slurm reports it {state.state}{why}; see `ugro slurm status`, or leave "
                "it out with --nodes"
            )
        user = cluster.node(name).user
        if user != cluster.slurm.job_user:
            problems.append(
                f"{name}: cluster.yaml logs in as {user!r}, but Slurm runs jobs as "
                f"{cluster.slurm.job_user!r} (slurm.job_user) and the job's files there must "
                "be that user's: give every node that user"
            )
    return problems


def submit(cluster: Cluster, script: str) -> str:
    """The script to sbatch (on its stdin); Slurm's job id."""
    done = _run(cluster, ["sbatch", "--parsable"], stdin=script)
    slurm_id = done.stdout.strip().split(";")[0]
    if done.returncode != 0 or not slurm_id.isdigit():
        raise UgroError(f"sbatch refused the job: {_said(done)}")
    return slurm_id


def job(cluster: Cluster, slurm_id: str) -> SlurmJob | None:
    """What Slurm says of the job now; None once it has forgotten it (MinJobAge after its end)."""
    done = _run(
        cluster,
        ["squeue", "--noheader", "--states=all", f"--jobs={slurm_id}", "--format=%i|%j|%T|%r|%N"],
    )
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:
            return None
        raise UgroError(f"squeue: {_said(done)}")
    jobs = parse_squeue(done.stdout)
    return jobs[0] if jobs else None


def queue(cluster: Cluster) -> list[SlurmJob]:
    """The partition's jobs that have not ended, in Slurm's order (running, then pending)."""
    done = _run(
        cluster,
        [
            "squeue",
            "--noheader",
            f"--partition={cluster.slurm.partition}",
            "--format=%i|%j|%T|%r|%N",
        ],
    )
    if done.returncode != 0:
        raise UgroError(f"squeue: {_said(done)}")
    return parse_squeue(done.stdout)


def cancel(cluster: Cluster, slurm_id: str) -> None:
    done = _run(cluster, ["scancel", slurm_id])
    if done.returncode != 0 and "already completing or completed" not in done.stderr:
        raise UgroError(f"scancel {slurm_id}: {_said(done)}")


def parse_squeue(text: str) -> list[SlurmJob]:
    jobs = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 5 and parts[0].isdigit():
            jobs.append(SlurmJob(*parts))
    return jobs
