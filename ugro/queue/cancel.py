"""Ending a job at a user's word: a queued job is cancelled, a running one stopped.

A job's lifecycle belongs to its controller (ugro.controller): a user's stop is a request to it
(its controller files' `stop`), and only when no controller can answer does `stop_job` stop the
job itself (the stop and collect playbooks) and write the history. A queued job is cancelled in
the history, where the lock lets one of a cancel and its controller's start win.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ugro.controller import slurm_watch
from ugro.core.cluster import Cluster
from ugro.core.errors import UgroError
from ugro.launch.job_playbooks import collect, stop
from ugro.records.controller_files import ControllerHandle
from ugro.records.history import JobRecord, Jobs, now_iso

log = logging.getLogger(__name__)

# How long `ugro stop` waits for the controller to record the stop (its teardown takes the stop
# grace, a collect and a few seconds).
STOP_WAIT_S = 90.0


def cancel(cluster: Cluster, record: JobRecord) -> bool:
    """End a queued job before it starts; False if it had started meanwhile (then it is a
    running job's stop: stop_job)."""
    jobs = Jobs(cluster)
    written = jobs.record(
        record.job_id,
        "stopped",
        attempt=record.attempt,
        reason="cancelled before it started",
        ended_at=now_iso(),
    )
    if written:
        controller = ControllerHandle(jobs.experiment_dir(record.job_id))
        if controller.exists():  # given its nodes: its controller, if it came, must not start it
            controller.request_stop("the user (cancelled)")
        # Waiting in Slurm's queue: out of it now, whether or not its controller is there.
        slurm_watch.cancel(cluster, record)
        log.info("cancelled %s while queued", record.job_id)
    return written


@dataclass(frozen=True)
class StopReport:
    job_id: str
    nodes: list[str]
    signalled: int
    collect_error: str | None
    state: str = "stopped"
    unreachable: tuple[str, ...] = ()


def stop_job(
    cluster: Cluster, record: JobRecord, *, extravars: Mapping[str, Any] | None = None
) -> StopReport:
    """A user's stop: every process of the job on every node, its files home, `stopped`
    recorded. The job's controller does it when there is one (started again if it died);
    this process does it itself only when none answers."""
    jobs = Jobs(cluster)
    nodes = jobs.nodes(record)
    if record.queued:
        if cancel(cluster, record):
            return StopReport(record.job_id, [], 0, None)
        record = jobs.find(record.job_id)  # it started meanwhile: stopped as a running job
    controller = ControllerHandle(jobs.experiment_dir(record.job_id))
    if controller.exists() and (record.active or controller.alive()):
        controller.request_stop()
        controller.ensure()
        deadline = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < deadline:
            current = jobs.find(record.job_id)
            if not current.active and (not controller.alive() or controller.finished()):
                return _report_from(current, nodes)
            if not current.active and controller.state().past_retries:
                return _report_from(current, nodes)
            time.sleep(0.2)
        log.warning("%s: its controller did not stop it within %.0fs", record.job_id, STOP_WAIT_S)
    states = stop(cluster, record.job_id, nodes, extravars=extravars)
    collect_error = None
    try:
        collect(cluster, record.job_id, nodes, extravars=extravars)
    except UgroError as exc:
        collect_error = exc.message
    if jobs.find(record.job_id).active:
        jobs.record(record.job_id, "stopped", reason="stopped by the user", ended_at=now_iso())
        log.info("%s stopped by the user", record.job_id)
    signalled = sum(int(s.get("signalled", 0)) for s in states.values())
    return StopReport(record.job_id, nodes, signalled, collect_error)


def _report_from(record: JobRecord, nodes: list[str]) -> StopReport:
    teardown = record.detail.get("teardown") or {}
    signalled = sum(int(r.get("signalled") or 0) for r in teardown.values())
    unreachable = tuple(sorted(n for n, r in teardown.items() if "unreachable" in r))
    return StopReport(record.job_id, nodes, signalled, None, record.state, unreachable)
