"""Where queued jobs go: first come first served, with backfill that cannot delay anyone.

Pure: the daemon (ugro.daemon) hands it the queue and what it knows of each node, and starts
what it decides (ugro.queue.submit.dispatch). A job starts when the nodes it asks for are free
and healthy. A later job may start before an earlier one that waits only on nodes no earlier
waiting job asks for, so it can never delay them; every waiting job gets the reason it waits,
as Slurm's squeue gives one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Placement:
    """The nodes a job asks for: these nodes exactly, or any `count` nodes (each of whose GPUs
    has `min_vram_gb` at least, when given), or (neither) every node of the cluster."""

    nodes: tuple[str, ...] = ()
    count: int | None = None
    min_vram_gb: float | None = None

    def describe(self) -> str:
        if self.nodes:
            return ",".join(self.nodes)
        if self.count is None:
            return "all nodes"
        vram = f" with {self.min_vram_gb:g} GB per GPU" if self.min_vram_gb else ""
        return f"{self.count} node{'s' if self.count > 1 else ''}{vram}"

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Placement:
        data = data or {}
        count = data.get("count")
        vram = data.get("min_vram_gb")
        return cls(
            nodes=tuple(str(n) for n in data.get("nodes") or ()),
            count=int(count) if count is not None else None,
            min_vram_gb=float(vram) if vram is not None else None,
        )


@dataclass(frozen=True)
class NodeView:
    """What the scheduler knows of one node."""

    name: str
    healthy: bool
    why: str = ""  # why it is not healthy
    vram_gb: float | None = None  # its smallest GPU's memory; None: no GPU known
    busy_with: str | None = None  # the job on it


@dataclass(frozen=True)
class Waiting:
    job_id: str
    placement: Placement


PAUSED = "the queue is paused (`ugro queue --resume`)"


@dataclass(frozen=True)
class Decision:
    job_id: str
    nodes: tuple[str, ...]  # where it starts now; empty while it waits
    reason: str = ""  # why it waits


def schedule(
    waiting: Sequence[Waiting], nodes: Sequence[NodeView], *, paused: bool = False
) -> list[Decision]:
    """Which waiting jobs start now and on which nodes, and why each other one waits.

    `waiting` in queue order, `nodes` in rank order (a job's first node leads it, so the master
    comes first where it takes part).
    """
    if paused:
        # Held first: whatever else a job would wait for, the pause is what to lift first
        # (and a resume shows the rest within a tick).
        return [Decision(job.job_id, (), PAUSED) for job in waiting]
    view = {node.name: node for node in nodes}
    taken: dict[str, str] = {n.name: n.busy_with for n in nodes if n.busy_with}
    held: dict[str, str] = {}  # node -> the earlier waiting job that asks for it
    decisions = []
    for job in waiting:
        chosen, reason = _place(job.placement, view, taken, held)
        if chosen:
            taken.update(dict.fromkeys(chosen, job.job_id))
        else:
            for name in _wanted(job.placement, view, held):
                held.setdefault(name, job.job_id)
        decisions.append(Decision(job.job_id, chosen, reason))
    return decisions


def _eligible(placement: Placement, view: Mapping[str, NodeView]) -> list[str]:
    names = list(placement.nodes) if placement.nodes else list(view)
    if placement.min_vram_gb:
        names = [n for n in names if (view[n].vram_gb or 0) >= placement.min_vram_gb]
    return names


def _wanted(
    placement: Placement, view: Mapping[str, NodeView], held: Mapping[str, str]
) -> list[str]:
    """The nodes a waiting job keeps later jobs off: all it asks for, or for a count, as many
    of its eligible nodes as it needs that no earlier job holds."""
    eligible = _eligible(placement, view)
    if placement.count is None:
        return eligible
    return [n for n in eligible if n not in held][: placement.count]


def _place(
    placement: Placement,
    view: Mapping[str, NodeView],
    taken: Mapping[str, str],
    held: Mapping[str, str],
) -> tuple[tuple[str, ...], str]:
    eligible = _eligible(placement, view)

    def why_not(name: str) -> str | None:
        node = view[name]
        if not node.healthy:
            return f"{name} {node.why or 'unhealthy'}"
        if name in taken:
            # A job's id, or what else holds the node ("serves chat": a deployment).
            if taken[name].startswith("serves "):
                return f"{name} {taken[name]}"
            return f"{name} busy with {taken[name]}"
        if name in held:
            return f"{name} held for {held[name]}, earlier in the queue"
        return None

    if placement.count is None:
        if not eligible:
            return (), "no node has what it asks for"
        blocking = [reason for name in eligible if (reason := why_not(name))]
        return ((), "; ".join(blocking)) if blocking else (tuple(eligible), "")
    usable = [name for name in eligible if why_not(name) is None]
    if len(usable) >= placement.count:
        return tuple(usable[: placement.count]), ""
    if len(eligible) < placement.count:
        vram = f" with {placement.min_vram_gb:g} GB per GPU" if placement.min_vram_gb else ""
        return (), f"only {len(eligible)} node(s){vram} in the cluster"
    blocking = [reason for name in eligible if (reason := why_not(name))]
    return (), f"needs {placement.count}, {len(usable)} free: " + "; ".join(blocking)
