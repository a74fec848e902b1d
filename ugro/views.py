"""What the CLI's `--json` and the dashboard's API both answer: one builder per view, so that a
script reading `ugro queue --json` and a page reading /api/queue see the same shape.

Every view reads the project's files (the job history, the daemon's state, experiment
directories); none asks a node anything, so a lost node never holds a view up.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ugro.core.cluster import Cluster
from ugro.core.errors import UgroError
from ugro.core.files import read_json_dict
from ugro.health import monitor
from ugro.queue.schedule import Placement
from ugro.queue.submit import dispatched, queue_order
from ugro.records.daemon_files import DaemonFiles, DaemonState
from ugro.records.deployments import DeploymentFiles, all_deployments
from ugro.records.history import JobRecord, Jobs
from ugro.records.job_status import job_status
from ugro.results.logview import LogView
from ugro.results.metrics import load_curves, load_telemetry
from ugro.slurm import jobs as slurm_jobs
from ugro.slurm.jobs import SlurmJob

log = logging.getLogger(__name__)

# The daemon's probe verdicts in the health playbook's words.
_HEALTH_STATUS = {"up": "healthy", "unhealthy": "unhealthy", "down": "unreachable"}
LOG_TAIL_LINES = 200


def job_row(record: JobRecord, jobs: Jobs) -> dict[str, Any]:
    return {
        "job_id": record.job_id,
        "name": record.name,
        "state": record.state,
        "attempt": record.attempt,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "ended_at": record.ended_at,
        "nodes": jobs.nodes(record),
        "sweep": record.sweep.get("name"),
        "reason": record.reason,
        **job_status(jobs, record).to_json(),
    }


def jobs_view(cluster: Cluster, *, recent: int | None = None) -> list[dict[str, Any]]:
    jobs = Jobs(cluster)
    records = list(jobs.records().values())
    return [job_row(r, jobs) for r in records[:recent]]


def daemon_health(cluster: Cluster) -> tuple[DaemonState, float] | None:
    """The daemon's last verdicts and their age in seconds, if a daemon runs and has probed
    within two of its probe intervals (else None: ask the nodes)."""
    files = DaemonFiles(cluster.paths.data)
    state = files.state()
    probed = state.probes.last_light
    if not probed or not state.nodes or not files.alive():
        return None
    age = time.time() - probed
    if age > 2 * cluster.daemon.probe_interval_s + 30:
        return None
    return state, age


def health_from_daemon(
    cluster: Cluster, state: DaemonState, age: float, names: list[str]
) -> dict[str, Any]:
    """The daemon's verdicts in the health playbook's shape (`ugro health --json`), plus its
    own probe sample under each node's "sample"."""
    nodes = {}
    for name in names:
        sample = state.nodes.get(name) or {}
        status = _HEALTH_STATUS.get(str(sample.get("status")), "unreachable")
        problems = list(sample.get("problems") or [])
        nodes[name] = {
            "name": name,
            "rank": cluster.node(name).rank,
            "status": status,
            "message": "; ".join(problems) or ("ok" if status == "healthy" else "no probe yet"),
            "sample": dict(sample),
        }
    probed = state.probes.last_light or time.time()
    return {
        "cluster": cluster.name,
        "checked_at": datetime.fromtimestamp(probed, timezone.utc).isoformat(timespec="seconds"),
        "healthy": all(node["status"] == "healthy" for node in nodes.values()),
        "nodes": nodes,
        "drift": [],
        "run_dir": None,
        "source": "daemon",
        "age_s": round(age, 1),
    }


def health_view(cluster: Cluster) -> dict[str, Any]:
    """The freshest verdicts there are: the daemon's, else the last health check's."""
    fresh = daemon_health(cluster)
    if fresh is not None:
        return health_from_daemon(cluster, *fresh, cluster.node_names)
    saved = read_json_dict(cluster.paths.cluster_state)
    if not saved:
        return {"cluster": cluster.name, "healthy": None, "nodes": {}, "source": "none"}
    age = None
    with contextlib.suppress(KeyError, TypeError, ValueError):
        age = round(time.time() - datetime.fromisoformat(saved["checked_at"]).timestamp(), 1)
    return {**saved, "source": "probe", "age_s": age}


def health_history_view(cluster: Cluster, node: str | None = None) -> list[dict[str, Any]]:
    path = cluster.paths.data / monitor.HISTORY
    changes = monitor.transitions(monitor.read_history(path, node))
    return [{**sample.to_json(), "change": text} for sample, text in changes]


def queue_view(cluster: Cluster) -> dict[str, Any]:
    """The queued and running jobs, each waiting job's position and why it waits."""
    files = DaemonFiles(cluster.paths.data)
    jobs = Jobs(cluster)
    records = jobs.records()
    state = files.live_state()
    reasons = {entry.job_id: entry.reason for entry in state.queue} if state else {}
    ordered = queue_order(records)
    active = [r for r in records.values() if r.active]
    slurm = _slurm_queue(cluster, [*ordered, *active])
    waiting = []
    for position, record in enumerate(ordered, start=1):
        in_slurm = _in_slurm(record, slurm)
        if in_slurm:
            reason = in_slurm.pop("reason") or "allocated: starting"
        elif dispatched(jobs, record):
            reason = "starting"
        elif state is None:
            reason = "no daemon runs (`ugro daemon start`)"
        else:
            reason = reasons.get(record.job_id) or "waiting for the daemon's next look"
        waiting.append(
            {
                "job_id": record.job_id,
                "position": position,
                "wants": Placement.from_json(record.placement).describe(),
                "reason": reason,
                "queued_at": record.created_at,
                **in_slurm,
            }
        )
    return {
        "paused": files.paused(),
        "daemon": state is not None,
        "queued": waiting,
        "running": [
            {
                "job_id": r.job_id,
                "state": r.state,
                "nodes": jobs.nodes(r),
                "attempt": r.attempt,
                **_in_slurm(r, slurm),
            }
            for r in active
        ],
    }


def _slurm_queue(cluster: Cluster, records: list[JobRecord]) -> dict[str, SlurmJob]:
    """Slurm's queue by job id, asked only when a job went through Slurm ({} if it does not
    answer: `ugro queue` still shows UGRO's side)."""
    if not any(r.detail.get("slurm_job") for r in records):
        return {}
    try:
        return {job.slurm_id: job for job in slurm_jobs.queue(cluster)}
    except UgroError as exc:
        log.warning("Slurm's queue: %s", exc.message)
        return {}


def _in_slurm(record: JobRecord, queue: Mapping[str, SlurmJob]) -> dict[str, Any]:
    slurm_id = record.detail.get("slurm_job")
    if not slurm_id:
        return {}
    job = queue.get(str(slurm_id))
    return {
        "slurm_job": str(slurm_id),
        "slurm_state": job.state if job else "ended",
        "reason": job.reason if job and job.pending and job.reason != "None" else "",
    }


def curves_view(directory: Path, *, since: int = 0, max_points: int = 1000) -> dict[str, Any]:
    """The job's train and eval points after step `since` (a page polling for new points asks
    from its last step), and where they came from. A first look at a long run gets at most
    `max_points` train points, evenly thinned, the last one kept."""
    curves = load_curves(directory, cached=True)
    train = curves.train[_first_after(curves.train, since) :]
    total = len(train)
    key = (directory, since, total, max_points)
    if key not in _THINNED:  # a long run's first look, asked again by every page opened
        if total > max_points:
            stride = -(-total // max_points)
            train = train[::stride] + ([train[-1]] if (total - 1) % stride else [])
        points = [_point(r) for r in train]
        if total > max_points:
            _THINNED.clear()
            _THINNED[key] = points
    else:
        points = _THINNED[key]
    return {
        "source": curves.source,
        "last_step": curves.last_step,
        "total": total,
        "train": points,
        "evals": [
            {"step": r["step"], "eval_loss": r["eval_loss"]}
            for r in curves.evals
            if int(r.get("step") or 0) > since
        ],
    }


_THINNED: dict[tuple[Path, int, int, int], list[dict[str, Any]]] = {}


def _first_after(records: list[dict[str, Any]], step: int) -> int:
    """The index of the first record past `step` (records are in step order, as logged; a
    resumed run that logged a step again is found by the scan that follows)."""
    index = bisect.bisect_right(records, step, key=lambda r: int(r.get("step") or 0))
    while index > 0 and int(records[index - 1].get("step") or 0) > step:
        index -= 1
    return index


def _point(record: dict[str, Any]) -> dict[str, Any]:
    point = {
        key: record.get(key)
        for key in ("step", "loss", "learning_rate", "tokens_per_s", "grad_norm")
    }
    ranks = record.get("ranks") or []
    if ranks:
        point["ranks"] = [
            {
                "rank": r.get("rank"),
                "node": r.get("node"),
                "own_s": round(float(r.get("step_time_s") or 0) - float(r.get("sync_s") or 0), 4),
                "sync_s": r.get("sync_s"),
                "peak_memory_mb": r.get("peak_memory_mb"),
            }
            for r in ranks
        ]
    return point


def telemetry_view(directory: Path, *, limit: int = 1000) -> dict[str, list[dict[str, Any]]]:
    """Each node's telemetry, thinned to at most `limit` samples a node."""
    thinned = {}
    for node, samples in load_telemetry(directory, cached=True).items():
        step = max(1, len(samples) // limit)
        thinned[node] = samples[::step]
    return thinned


def logs_view(directory: Path, *, lines: int = LOG_TAIL_LINES) -> list[dict[str, Any]]:
    """The last lines of each rank's log."""
    tails = []
    for node, rank, path in LogView(directory / "logs").files():
        tails.append({"node": node, "rank": rank, "lines": _tail(path, lines)})
    return tails


def _tail(path: Path, lines: int, chunk: int = 64 * 1024) -> list[str]:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - chunk))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def deployment_row(files: DeploymentFiles, *, now: float | None = None) -> dict[str, Any]:
    """A deployment as `ugro serve status --json` and /api/deployments show it: never its key."""
    deployment, state = files.deployment(), files.state()
    now = time.time() if now is None else now
    stats = state.stats
    return {
        "name": deployment.name,
        "node": deployment.node,
        "url": deployment.url,
        "engine": deployment.engine,
        "base": deployment.base_id,
        "models": deployment.model_ids,
        "jobs": {m.model_id: m.job_id for m in deployment.models if m.job_id},
        "state": state.state,
        "message": state.message,
        "needs_key": deployment.needs_key,
        "created": deployment.created,
        "uptime_s": round(now - state.serving_since, 1) if state.serving_since else None,
        "restarts": state.restarts,
        "requests": stats.get("requests"),
        "refused": stats.get("refused"),
        "latency_p50_ms": stats.get("latency_p50_ms"),
        "latency_p99_ms": stats.get("latency_p99_ms"),
        "tokens_per_s": stats.get("tokens_per_s"),
        "updated_age_s": round(now - state.updated, 1) if state.updated else None,
    }


def deployments_view(cluster: Cluster) -> list[dict[str, Any]]:
    rows = []
    for files in all_deployments(cluster):
        with contextlib.suppress(KeyError, TypeError, ValueError):
            rows.append(deployment_row(files))
    return rows
