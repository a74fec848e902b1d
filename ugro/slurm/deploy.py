"""`ugro slurm up|down`: the ugro_slurm role through ansible-runner, and what Slurm says of
each node (`sinfo`, run on the master, where slurmctld is)."""

from __future__ import annotations

from dataclasses import dataclass

from ugro.core.cluster import Cluster
from ugro.core.errors import RunError, UgroError
from ugro.nodes.runner import EventCallback, RunResult, run_playbook
from ugro.slurm import command

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
    gpus: int = 0  # the GPUs Slurm allocates on it (gres.conf)

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
    done = command.run(cluster, ["sinfo", "--noheader", "--Node", "--format", "%N|%T|%G|%E"])
    if done.returncode != 0:
        raise UgroError(
            f"{cluster.master.name}: Slurm does not answer ({command.said(done)}); "
            "is it deployed? `ugro slurm up`"
        )
    return parse_sinfo(done.stdout)


def parse_sinfo(text: str) -> dict[str, NodeState]:
    states = {}
    for line in text.splitlines():
        parts = line.strip().split("|", 3)  # the reason last: it may hold anything
        if len(parts) == 4:
            name, state, gres, reason = parts
            states[name] = NodeState(name, state, reason, gpus=gpu_count(gres))
    return states


def gpu_count(gres: str) -> int:
    """The GPUs in sinfo's %G ("gpu:2", "gpu:rtx4070:1(S:0)", "(null)")."""
    for item in gres.split(","):
        fields = item.split("(", 1)[0].split(":")
        if fields[0] == "gpu" and len(fields) > 1 and fields[-1].isdigit():
            return int(fields[-1])
    return 0
