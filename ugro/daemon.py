"""The UGRO daemon: the queue's scheduler, the cluster's health monitor, the jobs' supervisor.

    python -m ugro.daemon [--config PATH]     (what `ugro daemon start` runs, detached)
    ugro daemon run                           (the same in the foreground: systemd, a terminal)

One per data directory (a lock the kernel frees when it dies). It owns no job: each job has its
controller (ugro.controller), which goes on whether or not the daemon runs. Its loop reconciles
what is recorded with what runs, once a second, and acts only where they differ:

- controllers: a job that still needs its controller and has none gets it again;
- the queue: queued jobs whose nodes are free and healthy are handed to a controller of their
  own (ugro.jobqueue.schedule, then dispatch), first come first served, with backfill;
- health: a light probe of every node each `daemon.probe_interval_seconds`, a deep one
  (`ugro health --deep`) hourly and after a node comes back, on idle nodes only; verdicts go
  to data/health_history.jsonl;
- notifications: `notify.command` when a job has ended (its controller done) and when a node
  goes down or comes back.

Everything it knows is on disk (ugro.state: atomic replaces, fsync'd appends), so `kill -9` at
any moment loses nothing: the history says which jobs are queued, running or over, and the
history's lock lets only one start of each attempt through. What it serves clients is
`data/daemon/state.json`: the queue with each job's reason to wait, each node's last verdict,
and what it is doing. It binds no network port.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from ugro import monitor
from ugro.cluster import Cluster
from ugro.daemonfiles import DaemonFiles, already_running
from ugro.errors import UgroError, UsageError
from ugro.jobqueue import (
    Decision,
    NodeView,
    Placement,
    Waiting,
    dispatch,
    dispatched,
    queue_order,
    schedule,
)
from ugro.jobs import JobRecord, Jobs, now_iso
from ugro.jobstates import FINAL_STATES
from ugro.notify import notify
from ugro.processes import spawn_detached, take_lock
from ugro.state import write_json_atomic
from ugro.watcher import Watcher

log = logging.getLogger("ugro.daemon")

TICK_S = 1.0
# Even when nothing seems to change: revive controllers, re-check leftovers, refresh state.json.
RECONCILE_S = 5.0
DEEP_TIMEOUT_S = 900.0


class Daemon:
    def __init__(self, cluster: Cluster, config: str | None = None) -> None:
        self.cluster = cluster
        self.config = config
        self.files = DaemonFiles(cluster.paths.data)
        self.jobs = Jobs(cluster)
        self.health_path = cluster.paths.data / monitor.HISTORY
        # Each node's verdict from this daemon's own probes: until its first, a node is "not
        # probed yet" (an old verdict from the history must not start a job on a dead node).
        self.samples: dict[str, monitor.Sample] = {}
        # The last verdict the history holds, to compare the first probe with (a GPU lost).
        self.previous = monitor.latest(monitor.read_history(self.health_path, tail=1 << 20))
        self.stopping = False
        self.activity = "starting"
        self.started_at = time.time()
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="probe")
        self.light: Future[list[monitor.Sample]] | None = None
        self.deep: Future[list[monitor.Sample]] | None = None
        self.next_light = 0.0  # at once
        self.last_light = self.last_deep = 0.0
        # Hourly; sooner for a node that came back, or whose light probe finds no torch facts
        # in its cache (a launch then has to probe it: the deep probe fills the cache).
        self.next_deep = time.time() + cluster.daemon.deep_probe_interval_s
        # Each node's last healthy report with torch's facts: what a launch may use instead of
        # probing the node again (ugro.freshhealth).
        self.reports: dict[str, dict[str, Any]] = {}
        self.deep_wanted: set[str] = set()
        self.deep_nodes: set[str] = set()  # under a deep probe now: no job starts there
        self.decisions: list[Decision] = []
        self._done: set[tuple[str, int]] = set()  # (job, attempt): ended, its controller done
        self.busy: dict[str, str] = {}
        self.paused = False
        self.cursor = 0  # bytes of the job history whose ends have been looked at
        self.pending_notices: dict[str, int] = {}  # job id -> attempt that ended, to notify
        self._stamp: tuple[int, int] | None = None
        self._next_reconcile = 0.0
        self._next_state_write = 0.0
        self.dashboard: str | None = None

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> None:
        self.files.dir.mkdir(parents=True, exist_ok=True)
        lock = take_lock(self.files.lock_path)
        if lock is None:
            raise UsageError(already_running(self.files))
        previous = self.files.state()
        self.cursor = _restore_cursor(previous, self.jobs.paths.job_history)
        self.pending_notices = {
            str(k): int(v) for k, v in (previous.get("pending_notices") or {}).items()
        }
        self.reports = dict(previous.get("reports") or {})
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
            self.pool.shutdown(wait=False, cancel_futures=True)
            log.info("daemon for %s: stopped", self.cluster.name)

    def _stop(self, number: int, _frame: object) -> None:
        log.info("daemon: signal %d, stopping (jobs go on with their controllers)", number)
        self.stopping = True

    def tick(self) -> None:
        now = time.time()
        changed = self._collect_probes(now)
        if self.light is None and now >= self.next_light:
            previous = {**self.previous, **self.samples}
            self.light = self.pool.submit(monitor.probe_all, self.cluster, now, previous)
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
        if self.deep is None and self.last_light and (self.deep_wanted or now >= self.next_deep):
            self._start_deep(now)
        if time.monotonic() >= self._next_state_write:
            self._write_state()

    def reconcile(self) -> None:
        """Observe the history, the controllers and the nodes; act where they differ."""
        records = self.jobs.records()
        for record in records.values():
            if self._settled(record) or (record.queued and not dispatched(self.jobs, record)):
                continue
            if Watcher(self.jobs.experiment_dir(record.job_id)).ensure():
                log.info("%s: its controller had stopped; started it again", record.job_id)
        self.busy = self._busy(records)
        self._schedule(records)
        self._notice_ends(records)
        self._write_state()

    def _serve_dashboard(self) -> str | None:
        """The dashboard on a thread of this process (cluster.yaml's dashboard section); its
        address, without the token, for `ugro daemon status`. A token made here (an address
        other than loopback, no UGRO_DASHBOARD_TOKEN) is kept in daemon/dashboard_token, 0600."""
        options = self.cluster.daemon
        if not options.dashboard_with_daemon:
            return None
        from ugro.web.serve import Listener, choose_token, serve_in_thread

        listener = Listener(
            options.dashboard_host, options.dashboard_port, choose_token(options.dashboard_host)
        )
        token_file = self.files.dir / "dashboard_token"
        token_file.unlink(missing_ok=True)
        if serve_in_thread(self.cluster, listener) is None:
            return None
        if listener.token and "UGRO_DASHBOARD_TOKEN" not in os.environ:
            descriptor = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
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
                working = Watcher(self.jobs.experiment_dir(record.job_id)).working()
                if working:
                    # Until its controller is done (or starts a retry), look every tick: the
                    # nodes may be free in a moment, and the next job should have them at once.
                    self._next_reconcile = min(self._next_reconcile, time.monotonic() + TICK_S)
            if working:
                for name in self.jobs.nodes(record):
                    busy.setdefault(name, record.job_id)
        for name in self.deep_nodes:
            # Importing torch there now: a job would share the GPU with it.
            busy.setdefault(name, "the daemon's deep health probe")
        for name, sample in self.samples.items():
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
        watcher = Watcher(self.jobs.experiment_dir(record.job_id))
        if watcher.exists() and not watcher.finished():
            return False
        self._done.add(key)
        return True

    def node_views(self) -> list[NodeView]:
        views = []
        for node in self.cluster.nodes:
            sample = self.samples.get(node.name)
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
            Waiting(record.job_id, Placement.from_json(record.detail.get("placement")))
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

    # -- health ---------------------------------------------------------------------------------
    def _collect_probes(self, now: float) -> bool:
        """Take in finished probes; True if a node's verdict changed."""
        fresh: list[monitor.Sample] = []
        if self.light is not None and self.light.done():
            fresh += _result(self.light, "light probe")
            self.light = None
            self.last_light = now
            self.next_light = now + self.cluster.daemon.probe_interval_s
        if self.deep is not None and self.deep.done():
            fresh += _result(self.deep, "deep probe")
            self.deep = None
            self.deep_nodes = set()
            self.last_deep = now
        if not fresh:
            return False
        monitor.record(self.health_path, fresh)
        changed = False
        for sample in fresh:
            before = self.samples.get(sample.node) or self.previous.get(sample.node)
            self.samples[sample.node] = sample
            if sample.healthy and (sample.report.get("env") or {}).get("torch_version"):
                self.reports[sample.node] = {"at": sample.at, "report": dict(sample.report)}
            else:
                self.reports.pop(sample.node, None)
                if sample.kind == "light" and sample.status != "down" and sample.report:
                    self.deep_wanted.add(sample.node)  # torch's facts not cached there
            if before is None or (before.status, before.problems) != (
                sample.status,
                sample.problems,
            ):
                changed = True
                log.info("%s: %s", sample.node, sample.why if not sample.healthy else "up")
            if before is not None and before.status != "down" and sample.status == "down":
                notify(self.cluster, "node_down", node=sample.node, reason=sample.why)
            if before is not None and before.status == "down" and sample.status != "down":
                notify(self.cluster, "node_up", node=sample.node, reason=sample.why)
                self.deep_wanted.add(sample.node)  # back: look at it closely
        return changed

    def _start_deep(self, now: float) -> None:
        """`ugro health --deep` on the idle nodes that answer: torch imported, GPUs checked,
        never on a node a job runs on."""
        idle = [
            name
            for name in self.cluster.node_names
            if name not in self.busy
            and (sample := self.samples.get(name)) is not None
            and sample.status != "down"
            and not sample.loaded
        ]
        wanted = [n for n in idle if n in self.deep_wanted] if now < self.next_deep else idle
        self.deep_wanted -= set(wanted)
        if now >= self.next_deep:
            self.next_deep = now + self.cluster.daemon.deep_probe_interval_s
        if wanted:
            self.deep_nodes = set(wanted)
            self.deep = self.pool.submit(self._deep_probe, wanted)

    def _deep_probe(self, names: list[str]) -> list[monitor.Sample]:
        argv = [sys.executable, "-m", "ugro"]
        argv += ["--config", self.config] if self.config else []
        argv += ["health", "--now", "--deep", "--json"]
        for name in names:
            argv += ["--node", name]
        done = subprocess.run(
            argv, capture_output=True, timeout=DEEP_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL
        )
        try:
            summary = json.loads(done.stdout)
        except ValueError:
            log.warning("deep probe of %s: no verdict (exit %d)", ", ".join(names), done.returncode)
            return []
        return monitor.deep_samples(summary, time.time())

    # -- notifications --------------------------------------------------------------------------
    def _notice_ends(self, records: dict[str, JobRecord]) -> None:
        """Notify each job's end once its controller is done with it (a retry is not an end);
        what was ended is read from where the last look stopped (bytes of the history)."""
        path = self.jobs.paths.job_history
        try:
            with open(path, "rb") as handle:
                handle.seek(self.cursor)
                new = handle.read()
        except FileNotFoundError:
            new = b""
        complete = new[: new.rfind(b"\n") + 1]
        self.cursor += len(complete)
        for line in complete.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("state") in FINAL_STATES:
                self.pending_notices[str(entry["job_id"])] = int(entry.get("attempt") or 1)
        for job_id, attempt in list(self.pending_notices.items()):
            record = records.get(job_id)
            if record is None:
                del self.pending_notices[job_id]
                continue
            if record.attempt != attempt and not record.ended:
                del self.pending_notices[job_id]  # retried: the next attempt's end will tell
                continue
            if Watcher(self.jobs.experiment_dir(job_id)).working():
                continue  # its controller may still retry it
            del self.pending_notices[job_id]
            failure = record.detail.get("failure") or {}
            notify(
                self.cluster,
                "job_ended",
                job_id=job_id,
                job_name=record.name,
                job_state=record.state,
                attempt=record.attempt,
                node=failure.get("node"),
                reason=failure.get("reason") or record.detail.get("reason") or record.state,
            )

    # -- what clients read ----------------------------------------------------------------------
    def _write_state(self, **extra: Any) -> None:
        self._next_state_write = time.monotonic() + RECONCILE_S
        decisions = {d.job_id: d for d in self.decisions}
        write_json_atomic(
            self.files.state_path,
            {
                "pid": os.getpid(),
                "cluster": self.cluster.name,
                "config": self.config,
                "started_at": self.started_at,
                "updated_at": time.time(),
                "activity": self.activity,
                "paused": self.paused,
                "dashboard": self.dashboard,
                "cursor": self.cursor,
                "pending_notices": self.pending_notices,
                "queue": [
                    {"job_id": job_id, "position": index + 1, **asdict(decision)}
                    for index, (job_id, decision) in enumerate(decisions.items())
                ],
                "busy": self.busy,
                "nodes": {name: sample.to_json() for name, sample in self.samples.items()},
                "reports": self.reports,
                "probes": {
                    "interval_s": self.cluster.daemon.probe_interval_s,
                    "last_light": self.last_light or None,
                    "next_light": self.next_light or None,
                    "last_deep": self.last_deep or None,
                    "next_deep": self.next_deep,
                },
                **extra,
            },
        )


def _result(future: Future[list[monitor.Sample]], what: str) -> list[monitor.Sample]:
    try:
        return future.result()
    except Exception:  # a probe must never take the daemon down
        log.exception("%s failed", what)
        return []


def _restore_cursor(previous: dict[str, Any], history: Path) -> int:
    """Where the last daemon stopped reading the history; a first daemon starts at its end
    (jobs that ended before it are not news)."""
    size = history.stat().st_size if history.exists() else 0
    cursor = previous.get("cursor")
    if isinstance(cursor, int) and 0 <= cursor <= size:
        return cursor
    return size


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


def spawn(files: DaemonFiles, config: str | None, *, wait_s: float = 20.0) -> int:
    """Start the daemon detached (its own session, its output in daemon.log); its pid once it
    holds its lock."""
    files.dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ugro.daemon", *(["--config", config] if config else [])]
    process = spawn_detached(argv, files.log_path)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if files.alive() and files.state().get("pid") == process.pid:
            return process.pid
        if process.poll() is not None:
            tail = files.log_path.read_text(errors="replace").strip().splitlines()[-1:]
            raise UsageError(
                f"the daemon exited at once ({tail[0] if tail else process.returncode}); "
                f"see {files.log_path}"
            )
        time.sleep(0.1)
    raise UsageError(f"the daemon did not start within {wait_s:.0f}s; see {files.log_path}")


def stop(files: DaemonFiles, *, wait_s: float = 20.0) -> int | None:
    """SIGTERM the daemon and wait for its lock to be free (SIGKILL after wait_s); its pid,
    None if none ran. Jobs go on: their controllers are not the daemon's."""
    if not files.alive():
        return None
    pid = files.state().get("pid")
    if not isinstance(pid, int):
        raise UsageError(f"a daemon holds {files.lock_path} but {files.state_path} names no pid")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while files.alive():
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + wait_s
        time.sleep(0.1)
    return pid


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ugro.daemon")
    parser.add_argument("--config")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from ugro.config import load_cluster

    try:
        cluster = load_cluster(args.config)
        Daemon(cluster, args.config).run()
    except UgroError as exc:
        log.error("%s", exc.message)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
