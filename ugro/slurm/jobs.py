"""UGRO's jobs in Slurm: submit, follow, cancel, and the checks before a submission.

Every Slurm command runs on the master (where slurmctld is and UGRO runs), as its user: the
job user (ugro.slurm.users), whom Slurm runs the job as on every node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ugro.core.cluster import Cluster
from ugro.core.errors import UgroError
from ugro.slurm import command
from ugro.slurm.command import said
from ugro.slurm.deploy import NodeState, node_states

# squeue's columns for a job, in SlurmJob's order (%B: the node its batch script runs on).
_FORMAT = "--format=%i|%j|%T|%r|%N|%B"
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
    nodes: str = ""  # its allocation as Slurm compresses it ("gpu-master,gpu[1-2]")
    batch_host: str = ""  # the node its batch script runs on (the first allocated)

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def pending(self) -> bool:
        return self.state == "PENDING"

    @property
    def allocated(self) -> bool:
        """Slurm gave it its nodes and runs its batch script."""
        return self.state == "RUNNING" and self.batch_host not in ("", "n/a", "(null)")


def submission_refusals(
    cluster: Cluster, nodes: Sequence[str], *, named: bool = True
) -> tuple[list[str], dict[str, NodeState]]:
    """Why the job cannot go to Slurm now, one line per cause, each naming the node and the fix
    (Slurm not answering, a node it does not know, a node UGRO reaches as another user than the
    one Slurm runs jobs as, and for `named` nodes one Slurm reports down); and what Slurm says
    of each node. `nodes`: the job's, or every node Slurm may pick for it."""
    try:
        states = node_states(cluster)
    except UgroError as exc:
        return [f"--scheduler slurm: {exc.message}"], {}
    problems = []
    for name in nodes:
        state = states.get(name)
        if state is None:
            problems.append(
                f"{name}: Slurm does not know it; `ugro slurm up` writes every node into slurm.conf"
            )
        elif named and not state.takes_jobs:
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
    return problems, states


def gpus_per_node(
    states: Mapping[str, NodeState],
    nodes: Sequence[str],
    ranks: Mapping[str, int | None] | None = None,
) -> int:
    """The GPUs a job asks of each of its nodes: as many as it uses on the node that has fewest
    (one sbatch asks every node for the same); none where any of them has none. `ranks`: the
    ranks cluster.yaml gives a node (nproc_per_node), when fewer than its GPUs."""
    counts = []
    for name in nodes:
        gpus = states[name].gpus if name in states else 0
        wanted = (ranks or {}).get(name)
        counts.append(min(gpus, wanted) if wanted else gpus)
    return min(counts) if counts and min(counts) > 0 else 0


def submit(cluster: Cluster, script: str) -> str:
    """The script to sbatch (on its stdin); Slurm's job id."""
    done = command.run(cluster, ["sbatch", "--parsable"], stdin=script)
    slurm_id = done.stdout.strip().split(";")[0]
    if done.returncode != 0 or not slurm_id.isdigit():
        raise UgroError(f"sbatch refused the job: {said(done)}")
    return slurm_id


def job(cluster: Cluster, slurm_id: str) -> SlurmJob | None:
    """What Slurm says of the job now; None once it has forgotten it (MinJobAge after its end)."""
    done = command.run(
        cluster,
        ["squeue", "--noheader", "--states=all", f"--jobs={slurm_id}", _FORMAT],
    )
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:
            return None
        raise UgroError(f"squeue: {said(done)}")
    jobs = parse_squeue(done.stdout)
    return jobs[0] if jobs else None


def queue(cluster: Cluster) -> list[SlurmJob]:
    """The partition's jobs that have not ended, in Slurm's order (running, then pending)."""
    done = command.run(
        cluster,
        [
            "squeue",
            "--noheader",
            f"--partition={cluster.slurm.partition}",
            _FORMAT,
        ],
    )
    if done.returncode != 0:
        raise UgroError(f"squeue: {said(done)}")
    return parse_squeue(done.stdout)


def cancel(cluster: Cluster, slurm_id: str) -> None:
    done = command.run(cluster, ["scancel", slurm_id])
    if done.returncode != 0 and "already completing or completed" not in done.stderr:
        raise UgroError(f"scancel {slurm_id}: {said(done)}")


def hostnames(cluster: Cluster, nodelist: str) -> list[str]:
    """Slurm's compressed node list ("gpu-master,gpu[1-2]") as node names."""
    done = command.run(cluster, ["scontrol", "show", "hostnames", nodelist])
    if done.returncode != 0:
        raise UgroError(f"scontrol show hostnames {nodelist}: {said(done)}")
    return done.stdout.split()


def write_on_node(cluster: Cluster, node: str, path: str, text: str) -> None:
    """A file written whole on a node (through a temporary name, so that a reader polling for
    it never sees half of it)."""
    # A fixed script; the path is its argument, never part of it.
    atomic = 'mkdir -p "$(dirname "$1")" && cat > "$1.tmp" && mv "$1.tmp" "$1"'
    done = command.run(
        cluster, ["sh", "-c", atomic, "ugro-write", path], node=cluster.node(node), stdin=text
    )
    if done.returncode != 0:
        raise UgroError(f"{node}: writing {path}: {said(done)}")


def parse_squeue(text: str) -> list[SlurmJob]:
    jobs = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 6 and parts[0].isdigit():
            jobs.append(SlurmJob(*parts))
    return jobs
