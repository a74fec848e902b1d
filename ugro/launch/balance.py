"""How a job's ranks split each micro-step: the launch's choice, and how a plan is shown.

The split itself happens in the ranks (scripts/trainlib/balance.py): only they can measure what
fits their memory and how fast they go. Here: which mode a launch asks for (`auto` when the
job's nodes differ, `equal` when they are alike, `manual` from cluster.yaml), and balance.json,
the plan the ranks wrote, as lines a person reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ugro.core.cluster import Cluster
from ugro.core.errors import UsageError

MODES = ("auto", "equal", "manual")


def choose_mode(
    cluster: Cluster, nodes: Sequence[str], requested: str | None, *, own_script: bool
) -> str:
    """The job's balance mode: what was asked for, else auto on nodes that differ."""
    names = list(nodes) or cluster.node_names
    if requested is not None and requested not in MODES:
        raise UsageError(f"--balance {requested}: expected one of {', '.join(MODES)}")
    if own_script:
        if requested not in (None, "equal"):
            raise UsageError(
                f"--balance {requested} splits train_production.py's batches; a --script "
                "splits its own (UGRO_BALANCE tells it what was asked)"
            )
        return "equal"
    if requested == "manual":
        missing = [n for n in names if cluster.node(n).micro_batch_size is None]
        if missing:
            where = f" in {cluster.source}" if cluster.source else ""
            raise UsageError(
                f"--balance manual: {', '.join(missing)} has no micro_batch_size{where} "
                "(each node's samples per micro-step, per rank)"
            )
        return "manual"
    if requested is not None:
        return requested
    return "auto" if mixed(cluster, names) else "equal"


def mixed(cluster: Cluster, names: Sequence[str]) -> bool:
    """Nodes that differ in what cluster.yaml says they have: on GPU nodes the model, count
    and memory; on CPU nodes their declared memory budget (vram_gb) alone."""
    kinds: set[tuple[Any, ...]] = set()
    for name in names:
        node = cluster.node(name)
        hardware = node.hardware
        if node.accelerator == "cpu":
            kinds.add(("cpu", hardware.get("vram_gb")))
        else:
            kinds.add(
                (
                    node.accelerator,
                    hardware.get("gpu_model"),
                    hardware.get("gpu_count"),
                    hardware.get("vram_gb"),
                )
            )
    return len(kinds) > 1


def plan_lines(plan: Mapping[str, Any]) -> list[str]:
    """balance.json as the launch prints it: each rank's share of a micro-step, and why."""
    ranks = [r for r in plan.get("ranks") or [] if isinstance(r, dict)]
    if not ranks:
        return []
    per_step = sum(int(r.get("micro_batch") or 0) for r in ranks)
    accumulation = int(plan.get("accumulation") or 1)
    lines = [
        f"Batches ({plan.get('mode')}): a global batch of {plan.get('global_batch')} = "
        f"{accumulation} micro-step{'s' if accumulation != 1 else ''} of {per_step} samples"
    ]
    speeds = [float(r.get("samples_per_s") or 0) for r in ranks]
    total_speed = sum(speeds)
    for rank, speed in zip(ranks, speeds, strict=True):
        share = int(rank.get("micro_batch") or 0)
        lines.append(
            f"  {rank.get('node')} rank {rank.get('rank')}: {share} "
            f"({share / per_step:.0%}): {_why(rank, speed, total_speed, per_step)}"
            if per_step
            else f"  {rank.get('node')} rank {rank.get('rank')}: {share}"
        )
    return lines


def _why(rank: Mapping[str, Any], speed: float, total_speed: float, per_step: int) -> str:
    share = int(rank.get("micro_batch") or 0)
    fit = int(rank.get("fit") or 0)
    if rank.get("why") == "cluster.yaml":
        return "micro_batch_size in cluster.yaml"
    budget = rank.get("budget_source")
    memory = (
        f"{rank.get('budget_gb')} GB declared"
        if budget == "declared"
        else ("its free GPU memory" if budget == "device" else "its available memory")
    )
    fits = f"{fit} fit{'s' if fit == 1 else ''} {memory}"
    if not total_speed:
        return fits
    ideal = per_step * speed / total_speed
    pace = f"{speed:,.1f} samples/s ({speed / total_speed:.0%} of the cluster's)"
    if share == fit and ideal > fit + 0.5:
        return f"held to what fits: {fits}; {pace}"
    return f"{pace}; {fits}"
