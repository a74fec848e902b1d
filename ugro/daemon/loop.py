"""The daemon's loop: reconcile what is recorded with what runs, once a second.

It acts only where they differ, and only when something changed (the history, a verdict, the
pause flag), else every RECONCILE_S:

- controllers: a job that still needs its controller and has none gets it again;
- the queue: queued jobs whose nodes are free and healthy are handed to a controller of their
  own (ugro.queue.schedule, then ugro.queue.submit.dispatch);
- health: probes of the nodes (ugro.daemon.probes), never a deep one where a job runs;
- notifications: a job's end once its controller is done with it (ugro.daemon.notices).

Everything it knows is on disk, so `kill -9` at any moment loses nothing; what it serves
clients is data/daemon/state.json (ugro.records.daemon_files.DaemonState).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from datetime import datetime
from pathlib import Path

from ugro.core.cluster import Cluster
from ugro.core.errors import UgroError, UsageError
from ugro.core.processes import take_lock
from ugro.daemon.notices import JobEndNotices
from ugro.daemon.probes import HealthWatch
from ugro.queue.schedule import Decision, NodeView, Placement, Waiting, schedule
from ugro.queue.submit import dispatch, dispatched, queue_order
from ugro.records.controller_files import ControllerHandle
from ugro.records.daemon_files import (
    DaemonFiles,
    DaemonState,
    ProbeTimes,
    QueueEntry,
    already_running,
)
from ugro.records.deployments import all_deployments, serving_nodes
from ugro.records.history import JobRecord, Jobs, now_iso
from ugro.web.serve import Listener, choose_token, serve_in_thread

log = logging.getLogger(__name__)

TICK_S = 1.0
# Even when nothing seems to change: revive controllers, re-check leftovers, refresh state.json.
RECONCILE_S = 5.0


class Daemon:
    def __init__(self, cluster: Cluster, config: str | None = None) -> None:
        self.cluster = cluster
        self.config = config
        self.files = DaemonFiles(cluster.paths.data)
        self.jobs = Jobs(cluster)
        self.stopping = False
        self.activity = "starting"
        self.started_at = time.time()
        self.decisions: list[Decision] = []
        self._done: set[tuple[str, int]] = set()  # (job, attempt): ended, its controller done
        self.busy: dict[str, str] = {}
        self.paused = False
        self._stamp: tuple[int, int] | None = None
        self._next_reconcile = 0.0
        self._next_state_write = 0.0
        self.dashboard: str | None = None
        # Set up by run(), under the daemon's lock, from what the last daemon left.
        self.health: HealthWatch
        self.notices: JobEndNotices

    def run(self) -> None:
        self.files.dir.mkdir(parents=True, exist_ok=True)
        if take_lock(self.files.lock_path) is None:
            raise UsageError(already_running(self.files))
        # What the last daemon left (its cursor, pending notices, reports), read under the lock.
        previous = self.files.state()
        self.health = HealthWatch(self.cluster, self.config, previous.reports)
        self.notices = JobEndNotices(self.cluster, previous.cursor, previous.pending_notices)
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, self._stop)
        self.dashboard = self._serve_dashboard()
        log.info(
            "daemon for %s: pid %d, data in %s",
            self.cluster.name,
            os.getpid(),
            self.cluster.paths.data,
        )
        try:
            while not self.stopping:
                started = time.monotonic()
                self.tick()
                while not self.stopping and time.monotonic() - started < TICK_S:
                    time.sleep(0.1)
        finally:
            self.activity = "stopped"
            self._write_state(stopped_at=time.time())
            self.health.close()
            log.info("daemon for %s: stopped", self.cluster.name)

    def _stop(self, number: int, _frame: object) -> None:
        log.info("daemon: signal %d, stopping (jobs go on with their controllers)", number)
        self.stopping = True

    def tick(self) -> None:
        now = time.time()
        changed = self.health.collect(now)
        self.health.start_light(now)
        stamp = _file_stamp(self.jobs.paths.job_history)
        paused = self.files.paused()
        if (
            changed
            or stamp != self._stamp
            or paused != self.paused
            or time.monotonic() >= self._next_reconcile
        ):
            self._stamp, self.paused = stamp, paused
            self._next_reconcile = time.monotonic() + RECONCILE_S
            self.reconcile()
        self.health.start_deep(now, self.busy)
        if time.monotonic() >= self._next_state_write:
            self._write_state()

    def reconcile(self) -> None:
        """Observe the history, the controllers and the nodes; act where they differ."""
        records = self.jobs.records()
        for record in records.values():
            if self._settled(record) or (record.queued and not dispatched(self.jobs, record)):
                continue
            if ControllerHandle(self.jobs.experiment_dir(record.job_id)).ensure():
                log.info("%s: its controller had stopped; started it again", record.job_id)
        for deployment in all_deployments(self.cluster):
            if deployment.ensure():
                log.info(
                    "deployment %s: its controller had stopped; started it again", deployment.name
                )
        self.busy = self._busy(records)
        self._schedule(records)
        self.notices.look(records)
        self._write_state()

    def _serve_dashboard(self) -> str | None:
        """The dashboard on a thread of this process (cluster.yaml's dashboard section); its
        address, without the token, for `ugro daemon status`. A token made here (an address
        other than loopback, no UGRO_DASHBOARD_TOKEN) is kept in daemon/dashboard_token, 0600."""
        options = self.cluster.daemon
        if not options.dashboard_with_daemon:
            return None
        listener = Listener(
            options.dashboard_host, options.dashboard_port, choose_token(options.dashboard_host)
        )
        self.files.token_path.unlink(missing_ok=True)
        if serve_in_thread(self.cluster, listener) is None:
            return None
        if listener.token and "UGRO_DASHBOARD_TOKEN" not in os.environ:
            descriptor = os.open(
                self.files.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600
            )
            with os.fdopen(descriptor, "w") as handle:
                handle.write(listener.token + "\n")
        return listener.url.split("?")[0]

    # -- the queue ------------------------------------------------------------------------------
    def _busy(self, records: dict[str, JobRecord]) -> dict[str, str]:
        """Each node's job: a starting or running one, or one whose controller still works on
        it (a retry to come); else processes of a job the last probe saw there."""
        busy: dict[str, str] = {}
        for record in records.values():
            working = record.active or dispatched(self.jobs, record)
            if not working and record.ended and not self._settled(record):
                working = ControllerHandle(self.jobs.experiment_dir(record.job_id)).working()
                if working:
                    # Until its controller is done (or starts a retry), look every tick: the
                    # nodes may be free in a moment, and the next job should have them at once.
                    self._next_reconcile = min(self._next_reconcile, time.monotonic() + TICK_S)
            if working:
                for name in self.jobs.nodes(record):
                    busy.setdefault(name, record.job_id)
        for name, deployments in serving_nodes(self.cluster).items():
            busy.setdefault(name, f"serves {', '.join(deployments)}")
        for name in self.health.deep_nodes:
            # Importing torch there now: a job would share the GPU with it.
            busy.setdefault(name, "the daemon's deep health probe")
        for name, sample in self.health.samples.items():
            for job_id in sample.ugro_jobs:
                if name in busy:
                    break
                seen = records.get(job_id)
                if seen is not None and seen.ended and _epoch(seen.updated_at) >= sample.at - 2:
                    continue  # it ended after the probe saw it: its teardown checked it gone
                busy[name] = f"{job_id} (left over: `ugro reset --nodes {name}`)"
        return busy

    def _settled(self, record: JobRecord) -> bool:
        """An ended attempt whose controller is done: nothing about it changes any more (a
        resume is a new attempt). Remembered, so the history's old jobs cost no file reads."""
        key = (record.job_id, record.attempt)
        if key in self._done:
            return record.ended
        if not record.ended:
            return False
        controller = ControllerHandle(self.jobs.experiment_dir(record.job_id))
        if controller.exists() and not controller.finished():
            return False
        self._done.add(key)
        return True

    def node_views(self) -> list[NodeView]:
        views = []
        for node in self.cluster.nodes:
            sample = self.health.samples.get(node.name)
            declared = node.hardware.get("vram_gb")
            views.append(
                NodeView(
                    name=node.name,
                    healthy=bool(sample and sample.healthy),
                    why=sample.why if sample else "not probed yet",
                    vram_gb=(sample.vram_gb if sample and sample.vram_gb else None)
                    or (float(declared) if declared else None),
                    busy_with=self.busy.get(node.name),
                )
            )
        return views

    def _schedule(self, records: dict[str, JobRecord]) -> None:
        waiting = [
            Waiting(record.job_id, Placement.from_json(record.placement))
            for record in queue_order(records)
            if not dispatched(self.jobs, record)
        ]
        self.decisions = schedule(waiting, self.node_views(), paused=self.paused)
        for decision in self.decisions:
            if not decision.nodes:
                continue
            self.activity = f"starting {decision.job_id} on {', '.join(decision.nodes)}"
            try:
                dispatch(self.cluster, decision.job_id, decision.nodes)
            except UgroError as exc:
                log.error("%s cannot start: %s", decision.job_id, exc.message)
                self.jobs.record(
                    decision.job_id,
                    "stopped",
                    reason=f"cannot start: {exc.message}",
                    ended_at=now_iso(),
                )
                continue
            self.busy.update(dict.fromkeys(decision.nodes, decision.job_id))
        waiting_count = sum(1 for d in self.decisions if not d.nodes)
        self.activity = f"{waiting_count} queued" if waiting_count else "idle"

    # -- what clients read ----------------------------------------------------------------------
    def _write_state(self, *, stopped_at: float | None = None) -> None:
        self._next_state_write = time.monotonic() + RECONCILE_S
        health = self.health
        self.files.write_state(
            DaemonState(
                pid=os.getpid(),
                cluster=self.cluster.name,
                config=self.config,
                started_at=self.started_at,
                updated_at=time.time(),
                stopped_at=stopped_at,
                activity=self.activity,
                paused=self.paused,
                dashboard=self.dashboard,
                cursor=self.notices.cursor,
                pending_notices=self.notices.pending,
                queue=tuple(
                    QueueEntry(d.job_id, index + 1, tuple(d.nodes), d.reason)
                    for index, d in enumerate({d.job_id: d for d in self.decisions}.values())
                ),
                busy=self.busy,
                nodes={name: sample.to_json() for name, sample in health.samples.items()},
                reports=health.reports,
                probes=ProbeTimes(
                    interval_s=self.cluster.daemon.probe_interval_s,
                    last_light=health.last_light or None,
                    next_light=health.next_light or None,
                    last_deep=health.last_deep or None,
                    next_deep=health.next_deep,
                ),
            )
        )


def _file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return (info.st_size, info.st_mtime_ns)


def _epoch(stamp: str) -> float:
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except (TypeError, ValueError):
        return 0.0
