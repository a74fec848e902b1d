"""The queue: jobs submitted to run when their nodes are free, and where each one goes.

A submitted job is a job like any other (an experiment directory, a history, a controller) that
begins at `queued`. `submit` writes what the launch needs into the job's directory
(`submission.json`, private to the user) and returns; the daemon (ugro.daemon) decides when
and where it starts (`schedule`, a pure function) and hands it to a controller of its own
(`dispatch`), which records `launching` and starts it as a launch would. The history's lock
lets exactly one of a controller's start and a user's cancel win.

Placement is first come, first served: a job starts when the nodes it asks for are free and
healthy. A later job may start before an earlier one that waits (backfill) only on nodes no
earlier waiting job asks for, so it can never delay them.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from ugro.cluster import Cluster
from ugro.errors import UsageError
from ugro.jobs import JobRecord, Jobs, now_iso
from ugro.state import read_json, write_json_atomic
from ugro.watcher import ControllerOptions, Watcher

if TYPE_CHECKING:
    from ugro.launch import LaunchRequest  # its module pulls in the launch's: imported late

log = logging.getLogger(__name__)

SUBMISSION = "submission.json"
# A sweep's keys as train_production.py names them (any other key becomes --key-with-dashes).
SWEEP_FLAGS = {"lr": "--lr", "lora_r": "--lora-rank", "lora_rank": "--lora-rank"}
_SWEEP_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
_SWEEP_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]{0,31}")


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
    view = {node.name: node for node in nodes}
    taken: dict[str, str] = {n.name: n.busy_with for n in nodes if n.busy_with}
    held: dict[str, str] = {}  # node -> the earlier waiting job that asks for it
    decisions = []
    for job in waiting:
        chosen, reason = _place(job.placement, view, taken, held)
        if chosen and paused:
            chosen, reason = (), "the queue is paused (`ugro queue --resume`)"
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


# --- sweeps -------------------------------------------------------------------------------------


def sweep_points(specs: Sequence[str]) -> list[dict[str, str]]:
    """`lr=1e-4,2e-4` `lora_r=8,16` -> the grid, one dict per point, in the order given."""
    axes: list[tuple[str, list[str]]] = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or not _SWEEP_KEY.fullmatch(key):
            raise UsageError(
                f"--sweep {spec}: expected KEY=V1,V2 with KEY in lower case letters, digits, '_'"
            )
        items = [v for v in values.split(",") if v]
        bad = [v for v in items if not _SWEEP_VALUE.fullmatch(v)]
        if not items or bad:
            raise UsageError(
                f"--sweep {spec}: expected values of letters, digits, '.', '+', '-' "
                f"separated by commas{f' (not {bad[0]!r})' if bad else ''}"
            )
        if key in dict(axes):
            raise UsageError(f"--sweep {key}: given twice")
        axes.append((key, items))
    return [dict(zip([k for k, _ in axes], combo, strict=True)) for combo in _grid(axes)]


def _grid(axes: list[tuple[str, list[str]]]) -> list[tuple[str, ...]]:
    return list(itertools.product(*(values for _, values in axes)))


def sweep_job_name(name: str, point: Mapping[str, str]) -> str:
    """`lr-sweep` at {lr: 1e-4, lora_r: 8} -> `lr-sweep_lr1e-4_lora_r8`."""
    return "_".join([name, *(f"{key}{value}" for key, value in point.items())])


def sweep_args(point: Mapping[str, str]) -> tuple[str, ...]:
    """The script options that set a point (later options override earlier ones)."""
    args: list[str] = []
    for key, value in point.items():
        args += [SWEEP_FLAGS.get(key, "--" + key.replace("_", "-")), value]
    return tuple(args)


# --- submitting and starting --------------------------------------------------------------------


def submit(
    cluster: Cluster,
    request: LaunchRequest,
    options: ControllerOptions,
    placement: Placement,
    *,
    sweep: Mapping[str, Any] | None = None,
) -> str:
    """Queue a job: its directory, config.json and submission.json written, `queued` recorded.
    Returns its id."""
    from ugro.launch import JobScript, create_job, job_config, job_nodes, request_json

    JobScript.choose(request.script)  # a missing script is refused now, not at its turn
    wanted = job_nodes(cluster, placement.nodes)
    if placement.count is not None and placement.count > len(cluster.nodes):
        raise UsageError(
            f"--node-count {placement.count}: {cluster.name} has {len(cluster.nodes)} nodes"
        )
    jobs = Jobs(cluster)
    job_id = create_job(jobs, request.name)
    config = job_config(cluster, job_id, request, wanted)
    config["placement"] = asdict(placement)
    if sweep:
        config["sweep"] = dict(sweep)
    jobs.write_config(job_id, config)
    path = jobs.experiment_dir(job_id) / SUBMISSION
    write_json_atomic(
        path,
        {
            "options": asdict(replace(options, request=request_json(request))),
            "placement": asdict(placement),
        },
    )
    path.chmod(0o600)
    detail: dict[str, Any] = {"placement": asdict(placement)}
    if sweep:
        detail["sweep"] = dict(sweep)
    jobs.record(job_id, "queued", **detail)
    log.info(
        "queued %s for %s: %s %s",
        job_id,
        placement.describe(),
        request.script,
        " ".join(request.args),
    )
    return job_id


def submission(jobs: Jobs, job_id: str) -> tuple[ControllerOptions, Placement]:
    data = read_json(jobs.experiment_dir(job_id) / SUBMISSION)
    if not isinstance(data, dict):
        raise UsageError(f"{job_id}: its {SUBMISSION} is missing or unreadable")
    return ControllerOptions.from_json(data.get("options") or {}), Placement.from_json(
        data.get("placement")
    )


def dispatch(cluster: Cluster, job_id: str, nodes: Sequence[str]) -> int:
    """Give a queued job its nodes and a controller of its own, which starts it. Returns the
    controller's pid. Safe to repeat: a second controller finds the first's lock and leaves."""
    jobs = Jobs(cluster)
    options, _ = submission(jobs, job_id)
    request = {**options.request, "nodes": list(nodes)}
    config = jobs.config(job_id)
    config["nodes"] = list(nodes)
    jobs.write_config(job_id, config)
    watcher = Watcher(jobs.experiment_dir(job_id))
    watcher.prepare(cluster, replace(options, request=request))
    log.info("starting %s on %s", job_id, ", ".join(nodes))
    return watcher.spawn()


def dispatched(jobs: Jobs, record: JobRecord) -> bool:
    """Whether a queued job has been given its nodes (its controller starts it)."""
    return record.queued and Watcher(jobs.experiment_dir(record.job_id)).exists()


def queue_order(records: Mapping[str, JobRecord]) -> list[JobRecord]:
    """The queued jobs (of Jobs.records()), first submitted first: by when each was queued,
    and within one second in the history's order (Jobs.records() keeps it for equal times)."""
    return sorted((r for r in records.values() if r.queued), key=lambda r: r.created_at)


def cancel(cluster: Cluster, record: JobRecord) -> bool:
    """End a queued job before it starts; False if it had started meanwhile (then it is a
    running job's stop: ugro.control.stop_job)."""
    jobs = Jobs(cluster)
    written = jobs.record(
        record.job_id,
        "stopped",
        attempt=record.attempt,
        reason="cancelled before it started",
        ended_at=now_iso(),
    )
    if written:
        watcher = Watcher(jobs.experiment_dir(record.job_id))
        if watcher.exists():  # given its nodes: its controller, if it came, must not start it
            watcher.request_stop("the user (cancelled)")
        log.info("cancelled %s while queued", record.job_id)
    return written
