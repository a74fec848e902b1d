"""One Slurm command run where it must: sinfo, squeue, sbatch, scancel and scontrol on the
master (where slurmctld is and UGRO runs, as the job user), a file written on the node that
runs a job's batch script. Every failure is one line naming the node."""

from __future__ import annotations

import subprocess

from ugro.core.cluster import Cluster, Node
from ugro.core.errors import UgroError
from ugro.nodes.ssh import on_node

COMMAND_TIMEOUT_S = 15.0


def run(
    cluster: Cluster, argv: list[str], *, node: Node | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """argv on `node` (the master by default): its exit code is the caller's to read."""
    where = node or cluster.master
    try:
        return subprocess.run(
            on_node(cluster, where, argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        raise UgroError(
            f"{where.name}: no {argv[0]} here; deploy Slurm with `ugro slurm up`"
        ) from None
    except subprocess.TimeoutExpired:
        raise UgroError(
            f"{where.name}: {argv[0]} gave no answer within {COMMAND_TIMEOUT_S:.0f} s"
        ) from None


def said(done: subprocess.CompletedProcess[str]) -> str:
    """The last line a failed command wrote (its own words), else its exit code."""
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {done.returncode}"
