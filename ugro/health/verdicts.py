"""Health: turning each node's probe report into a verdict, spotting drift, keeping state.

The probing itself happens on the nodes (roles/ugro_health/module_utils/ugro_probe.py, run by
playbooks/health.yml); this module reads what came back through ugro.runner's events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from ugro.core.cluster import Cluster
from ugro.core.files import write_json_atomic
from ugro.nodes.runner import RunResult

log = logging.getLogger(__name__)

Status = Literal["healthy", "unhealthy", "unreachable"]

# The versions compared across nodes, and how to read each from a report.
_DRIFT_KEYS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "python": lambda r: r.get("env", {}).get("python_version"),
    "torch": lambda r: r.get("env", {}).get("torch_version"),
    "cuda": lambda r: r.get("env", {}).get("cuda_build"),
    "nccl": lambda r: r.get("env", {}).get("nccl_version"),
    "driver": lambda r: r.get("driver_version"),
    "lock": lambda r: (r.get("lock_hash") or "")[:12] or None,
}


@dataclass(frozen=True)
class NodeHealth:
    name: str
    rank: int
    status: Status
    message: str
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"


@dataclass(frozen=True)
class HealthSummary:
    cluster: str
    checked_at: str
    nodes: tuple[NodeHealth, ...]
    drift: tuple[str, ...]
    run_dir: str | None

    @property
    def healthy(self) -> bool:
        return all(node.healthy for node in self.nodes)

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "checked_at": self.checked_at,
            "healthy": self.healthy,
            "nodes": {node.name: asdict(node) for node in self.nodes},
            "drift": list(self.drift),
            "run_dir": self.run_dir,
        }


def assess(cluster: Cluster, result: RunResult, names: list[str]) -> HealthSummary:
    """One verdict per node from a health (or sync) run's events."""
    nodes = []
    reports: dict[str, Mapping[str, Any]] = {}
    for name in names:
        rank = cluster.node(name).rank
        outcome = result.hosts.get(name)
        report = (outcome.facts.get("ugro_health_report") if outcome else None) or {}
        if outcome is None:
            nodes.append(NodeHealth(name, rank, "unreachable", "not reached (run ended early)"))
        elif outcome.unreachable:
            nodes.append(NodeHealth(name, rank, "unreachable", outcome.message or "unreachable"))
        elif not report:
            message = outcome.message or "the probe returned no report"
            nodes.append(NodeHealth(name, rank, "unhealthy", message))
        else:
            reports[name] = report
            problems = report.get("problems") or []
            status: Status = "healthy" if report.get("healthy") and not problems else "unhealthy"
            message = "; ".join(problems) if problems else _ready_message(report)
            nodes.append(NodeHealth(name, rank, status, message, dict(report)))
    drift = find_drift(reports, cluster.environment.expected_versions)
    return HealthSummary(
        cluster=cluster.name,
        checked_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        nodes=tuple(sorted(nodes, key=lambda n: n.rank)),
        drift=tuple(drift),
        run_dir=str(result.run_dir) if result.run_dir else None,
    )


def _ready_message(report: Mapping[str, Any]) -> str:
    gpus = report.get("gpus") or []
    if report.get("effective_accelerator") == "cuda" and gpus:
        return f"ready: {len(gpus)} GPU(s)"
    return "ready (CPU)"


def find_drift(reports: Mapping[str, Mapping[str, Any]], expected: Mapping[str, str]) -> list[str]:
    """Warnings for versions that differ across nodes, or from what cluster.yaml declares."""
    warnings = []
    for key, read in _DRIFT_KEYS.items():
        seen = {name: read(report) for name, report in reports.items()}
        present = {name: value for name, value in seen.items() if value is not None}
        if len(set(present.values())) > 1:
            detail = ", ".join(f"{name}={value}" for name, value in sorted(present.items()))
            warnings.append(f"{key} differs across nodes: {detail}")
        declared = expected.get(key)
        if declared:
            off = sorted(n for n, v in present.items() if not _version_matches(str(v), declared))
            if off:
                detail = ", ".join(f"{name}={present[name]}" for name in off)
                warnings.append(f"{key} is not the declared {declared} on {detail}")
    return warnings


def _version_matches(actual: str, declared: str) -> bool:
    """'3.11' matches '3.11.7'; '2.1.0' matches '2.1.0+cu121'."""
    base = actual.split("+", 1)[0]
    return base == declared or base.startswith(declared + ".")


def save(cluster: Cluster, summary: HealthSummary) -> None:
    """Write data/cluster_state.json and one line per node to the health log."""
    write_json_atomic(cluster.paths.cluster_state, summary.to_json())
    # INFO, not WARNING: the CLI already shows every verdict; these lines are for logs/health.log.
    for node in summary.nodes:
        log.info("%s rank=%d %s: %s", node.name, node.rank, node.status, node.message)
    for warning in summary.drift:
        log.info("drift: %s", warning)


def leftovers(summary: HealthSummary, active: Mapping[str, str]) -> list[str]:
    """Warnings for UGRO-tagged processes on the nodes that belong to no running job
    (`active`: the running jobs' ids and states, from the history)."""
    found: dict[str, list[str]] = {}
    for node in summary.nodes:
        for job_id in node.report.get("ugro_jobs") or {}:
            if job_id not in active:
                found.setdefault(str(job_id), []).append(node.name)
    return [
        f"{', '.join(nodes)}: processes of {job_id}, which is not running any more; "
        f"`ugro reset --nodes {','.join(nodes)}` ends them"
        for job_id, nodes in sorted(found.items())
    ]
