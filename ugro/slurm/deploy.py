"""`ugro slurm up|down`: the ugro_slurm role through ansible-runner, and what Slurm says of
each node (`sinfo`, run on the master, where slurmctld is)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from ugro.core.cluster import Cluster
from ugro.core.errors import RunError, UgroError
from ugro.nodes.runner import EventCallback, RunResult, run_playbook
from ugro.nodes.ssh import on_node

SINFO_TIMEOUT_S = 15.0
# Slurm's states in which a node takes jobs (sinfo --long's words, any flag suffix cut).
SERVING_STATES = frozenset({"idle", "mixed", "allocated", "completing"})


@dataclass(frozen=True)
class Deployed:
    changed: int
    run: RunResult


@dataclass(frozen=True)
class NodeState:
    node: str
    state: str  # as sinfo says it, e.g. idle, allocated, down*, drained
    reason: str  # why Slurm set it down or drained ("none" otherwise)

    @property
    def takes_jobs(self) -> bool:
        return self.state.rstrip("*~#!%$@^-") in SERVING_STATES


def up(cluster: Cluster, on_event: EventCallback | None = None) -> Deployed:
    return _apply(cluster, "present", on_event)


def down(cluster: Cluster, on_event: EventCallback | None = None) -> Deployed:
    return _apply(cluster, "absent", on_event)


def _apply(cluster: Cluster, state: str, on_event: EventCallback | None) -> Deployed:
    result = run_playbook(
        cluster, "slurm", extravars={"ugro_slurm_state": state}, on_event=on_event
    )
    if not result.successful:
        failure = next((o for o in result.hosts.values() if o.failed or o.unreachable), None)
        said = (
            f"{failure.name}: {'unreachable: ' if failure.unreachable else ''}"
            f"{failure.message or 'failed'}"
            if failure
            else f"the playbook {result.status} (rc={result.rc})"
        )
        raise RunError(
            f"slurm {'up' if state == 'present' else 'down'}: {said} (log: {result.stdout_path})",
            status=result.status,
            rc=result.rc,
            artifact_dir=result.artifact_dir,
        )
    return Deployed(sum(o.changed for o in result.hosts.values()), result)


def node_states(cluster: Cluster) -> dict[str, NodeState]:
    """Each node Slurm knows, by name (its NodeName is the UGRO node's name)."""
    argv = ["sinfo", "--noheader", "--Node", "--format", "%N|%T|%E"]
    try:
        done = subprocess.run(
            on_node(cluster, cluster.master, argv),
            capture_output=True,
            text=True,
            timeout=SINFO_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        raise UgroError(
            f"{cluster.master.name}: no sinfo here; deploy Slurm with `ugro slurm up`"
        ) from None
    except subprocess.TimeoutExpired:
        raise UgroError(f"{cluster.master.name}: sinfo gave no answer within 15 s") from None
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UgroError(
            f"{cluster.master.name}: Slurm does not answer ({said}); "
            "is it deployed? `ugro slurm up`"
        )
    return parse_sinfo(done.stdout)


def parse_sinfo(text: str) -> dict[str, NodeState]:
    states = {}
    for line in text.splitlines():
        parts = line.strip().split("|", 2)
        if len(parts) == 3:
            states[parts[0]] = NodeState(parts[0], parts[1], parts[2])
    return states
