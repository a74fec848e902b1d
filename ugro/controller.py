"""A job's controller: one detached process on the master that owns the job until it is over.

    python -m ugro.controller EXPERIMENT_DIR      (started by the launch; see ugro.watcher)

Its loop reconciles what the history says with what the nodes say (observe, decide, act):

- `queued` (the daemon gave the job its nodes: ugro.jobqueue.dispatch): record `launching` and
  start it, as a launch would; a cancel recorded first wins, and then nothing starts.
- `launching`: wait for the launching process; if it died before the job ran, stop whatever
  started and record `lost` ("the launch was interrupted").
- `running`: keep a heartbeat stream to every node (ugro.nodelink) and judge the attempt from it
  (ugro.detect): a rank killed or failing, an agent killed under its workers, a node silent and
  unreachable by SSH, no training step for the hang timeout, or the user's stop request. Then
  tear the attempt down on every node and check nothing of it is left, bring its files home,
  and record its one final state with the cause that came first and when the job really ended.
- a final state: retry (`--retries`) from the last complete checkpoint after a backoff, unless
  the failure is one retrying cannot fix; else finish.
- leftovers on a node that could not be reached during teardown are killed when it answers
  again (within `cleanup_window_s`), and the history says so.

Only one controller runs per job (a lock the kernel frees when it dies); one started again after
a crash reads the history and the nodes and carries on from there, so no attempt starts twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ugro.cluster import Cluster
from ugro.detect import AttemptTracker, Problem, choose_cause
from ugro.errors import UgroError
from ugro.jobs import JobRecord, Jobs
from ugro.nodelink import NodeLink
from ugro.processes import take_lock
from ugro.state import read_json, write_json_atomic
from ugro.watcher import DONE, Watcher

log = logging.getLogger("ugro.controller")

POLL_S = 0.5
# After the first problem, wait this long for the reports that show its cause.
SETTLE_S = 1.5
# A node silent this long (heartbeats come every second) holds a decision back until it is
# known to be alive or lost.
SILENT_S = 2.5
LEFTOVER_PROBE_S = 5.0
# A failure that retrying cannot fix: a usage error (bad options exit 2).
USAGE_EXIT = 2


class JobGone(Exception):
    """The job's experiment directory disappeared under its controller."""


@dataclass
class Outcome:
    state: str  # succeeded | failed | stopped | lost
    at: float  # time.monotonic() when the job ended
    problem: Problem | None = None
    reason: str = ""
    last_step: int | None = None
    detected: float = 0.0  # time.monotonic() when the controller knew


@dataclass
class _Probe:
    thread: threading.Thread
    result: list[bool] = field(default_factory=list)


def wall(monotonic_at: float) -> float:
    return time.time() - (time.monotonic() - monotonic_at)


def iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, timezone.utc).isoformat(timespec="milliseconds")


class Controller:
    def __init__(self, cluster: Cluster, job_id: str, watcher: Watcher) -> None:
        self.cluster = cluster
        self.job_id = job_id
        self.watcher = watcher
        self.jobs = Jobs(cluster)
        self.options = watcher.options()
        self.phase = "starting"
        self.message = ""
        self.live: dict[str, Any] = {}
        self.pending_cleanup: list[str] = []
        self.attempt: int | None = None  # the attempt in hand, for state.json
        self._last_state_write = 0.0

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> None:
        log.info("controller for %s: pid %d", self.job_id, os.getpid())
        while not self._gone():
            record = self.jobs.find(self.job_id)
            self.attempt = record.attempt
            if record.state == "queued":
                self._start_queued(record)
            elif record.state == "launching":
                if not self._await_launch(record):
                    continue
            elif record.state == "running":
                outcome = self._watch(record)
                self._end(record, outcome)
            elif not self._retry(record):
                break
        if self._gone():
            log.info("controller for %s: its directory is gone; stopping", self.job_id)
            return
        self._chase_leftovers()
        self._publish(DONE, "", force=True)
        log.info("controller for %s: done", self.job_id)

    def _gone(self) -> bool:
        """The job's experiment directory was removed (the project deleted, a sandbox taken
        down): there is nothing left to watch or write to."""
        return not self.watcher.dir.is_dir()

    def _publish(self, phase: str, message: str, *, force: bool = False, **live: Any) -> None:
        # What the watching phase sees (nodes, steps, stall) belongs to that phase and attempt
        # only: any other phase clears it, so no reader takes one attempt's steps for the next.
        self.phase, self.message, self.live = phase, message, live
        now = time.monotonic()
        if (not force and now - self._last_state_write < 1.0) or self._gone():
            return
        self._last_state_write = now
        write_json_atomic(
            self.watcher.state_path,
            {
                "pid": os.getpid(),
                "phase": phase,
                "message": message,
                "attempt": self.attempt,
                "updated_at": time.time(),
                "pending_cleanup": self.pending_cleanup,
                **self.live,
            },
        )

    # -- launching ------------------------------------------------------------------------------
    def _start_queued(self, record: JobRecord) -> None:
        """Start a queued job on the nodes the daemon gave it (options.json's request)."""
        from ugro.launch import job_nodes, start_attempt, stored_request

        request = stored_request(self.options.request)
        nodes = job_nodes(self.cluster, request.nodes)
        written = self.jobs.record(
            self.job_id,
            "launching",
            attempt=record.attempt,
            nodes=nodes,
            launcher_pid=os.getpid(),
            queued_at=record.created_at,
        )
        if not written:
            return  # cancelled first: the loop sees `stopped`
        self._publish("launching", f"starting on {', '.join(nodes)}", force=True)
        try:
            start_attempt(
                self.cluster,
                self.job_id,
                request,
                attempt=record.attempt,
                nodes=nodes,
                args=request.args,
            )
        except UgroError as exc:
            log.warning("%s did not start: %s", self.job_id, exc.message)

    def _await_launch(self, record: JobRecord) -> bool:
        """Wait while the launch runs; True once it has ended either way."""
        launcher = record.detail.get("launcher_pid")
        self._publish("launching", f"attempt {record.attempt} is starting", force=True)
        while isinstance(launcher, int) and launcher != os.getpid() and _alive(launcher):
            time.sleep(POLL_S)
            if self.jobs.find(self.job_id).state != "launching":
                return True
        if self.jobs.find(self.job_id).state != "launching":
            return True
        # The launcher died between recording `launching` and `running` (or `failed`). Its
        # Ansible run may outlive it and still start the job: end that first, then the nodes.
        log.warning("%s: the launch (pid %s) ended before the job ran", self.job_id, launcher)
        orphans = end_orphaned_launch(self.job_id)
        if orphans:
            log.warning("%s: ended %d processes of the interrupted launch", self.job_id, orphans)
        nodes = self.jobs.nodes(record)
        started = time.monotonic()
        teardown = self._teardown(nodes)
        self._record_end(
            record,
            Outcome("lost", started, reason="the launch was interrupted before the job ran"),
            teardown,
        )
        return False

    # -- watching -------------------------------------------------------------------------------
    def _watch(self, record: JobRecord) -> Outcome:
        nodes = self.jobs.nodes(record)
        links = {
            name: NodeLink(self.cluster, self.cluster.node(name), self.job_id) for name in nodes
        }
        tracker = AttemptTracker(
            nodes,
            pg_timeout=float(self.cluster.launch.timeout_seconds),
            hang_timeout=self.options.hang_timeout,
            tolerate_rank_failures=self.cluster.launch.max_restarts > 0,
        )
        for link in links.values():
            link.start()
        probes: dict[str, _Probe] = {}
        seen: dict[str, float] = {}
        first_problem_at: float | None = None
        try:
            while True:
                if self._gone():
                    raise JobGone(self.job_id)
                now = time.monotonic()
                stop = self.watcher.stop_requested()
                if stop is not None:
                    by = str(stop.get("by") or "the user")
                    return Outcome(
                        "stopped",
                        now,
                        reason=f"stopped by {by}",
                        detected=now,
                        last_step=_last_step(tracker),
                    )
                unsettled = False
                for name, link in links.items():
                    beat = link.latest()
                    if beat is not None and beat.received > seen.get(name, 0.0):
                        seen[name] = beat.received
                        tracker.observe(name, beat.report, beat.received)
                    silent = link.silent_for(now)
                    # A node whose stream ended (its processes killed, as by a power cut) is
                    # not yet known lost: its peers' ranks fail at once, before its silence
                    # counts; wait for its verdict rather than blame them.
                    if silent > SILENT_S or link.stream_ended():
                        unsettled = True
                    if silent <= self.options.heartbeat_grace_s:
                        continue
                    probe = probes.get(name)
                    if probe is None:
                        probes[name] = _start_probe(link)
                    elif not probe.thread.is_alive():
                        del probes[name]
                        if probe.result and probe.result[0]:
                            log.warning(
                                "%s: no heartbeat from %s for %.0fs, but it answers SSH: "
                                "reconnecting",
                                self.job_id,
                                name,
                                silent,
                            )
                            link.start()
                        else:
                            last = beat.received if beat else link.started
                            tracker.add_unreachable(
                                name,
                                last,
                                f"unreachable: no heartbeat for {now - last:.0f}s and SSH "
                                "to it failed",
                            )
                problems = tracker.problems(now)
                if problems:
                    first_problem_at = first_problem_at or now
                    waited = now - first_problem_at
                    ready = waited >= SETTLE_S and (not unsettled or waited >= self._max_wait())
                    if ready or any(p.kind == "unreachable" for p in problems):
                        cause = choose_cause(problems)
                        assert cause is not None
                        return Outcome(
                            cause.final_state,
                            min(p.at for p in problems),
                            problem=cause,
                            reason=cause.describe(),
                            last_step=_last_step(tracker),
                            detected=now,
                        )
                elif tracker.succeeded():
                    return Outcome("succeeded", now, last_step=_last_step(tracker), detected=now)
                stalled = tracker.stalled_for(now)
                self._publish(
                    "watching",
                    f"stalled for {stalled // 5 * 5:.0f}s" if stalled and stalled >= 10 else "",
                    nodes={
                        name: {"silent_s": round(link.silent_for(now), 1)}
                        for name, link in links.items()
                    },
                    steps=tracker.steps(),
                    stalled_s=round(stalled, 1) if stalled is not None else None,
                    hang_timeout_s=round(tracker.current_hang_timeout(), 1),
                )
                time.sleep(POLL_S)
        finally:
            for link in links.values():
                link.close()

    def _max_wait(self) -> float:
        return self.options.heartbeat_grace_s + self.cluster.ssh.connect_timeout + 6

    # -- ending an attempt ----------------------------------------------------------------------
    def _teardown(self, nodes: list[str]) -> dict[str, dict[str, Any]]:
        """Every process of the job ended on every node that answers, and checked gone."""
        self._publish("tearing down", f"stopping {self.job_id} on {', '.join(nodes)}", force=True)
        links = [NodeLink(self.cluster, self.cluster.node(name), self.job_id) for name in nodes]
        with ThreadPoolExecutor(max_workers=max(len(links), 1)) as pool:
            reports = list(pool.map(lambda link: link.stop(grace=self.options.stop_grace_s), links))
        results = {}
        for name, report in zip(nodes, reports, strict=True):
            if "unreachable" in report:
                results[name] = {"unreachable": report["unreachable"]}
                continue
            results[name] = {
                key: report.get(key)
                for key in ("signalled", "killed", "left", "gpu_held", "gpu_checked", "took_s")
            }
        return results

    def _end(self, record: JobRecord, outcome: Outcome) -> None:
        nodes = self.jobs.nodes(record)
        teardown = self._teardown(nodes)
        down_at = time.monotonic()
        reachable = [n for n in nodes if "unreachable" not in teardown[n]]
        self._publish("collecting", f"bringing {self.job_id}'s files home", force=True)
        try:
            from ugro.control import collect

            collect(self.cluster, self.job_id, reachable)
        except UgroError as exc:
            log.warning("collecting %s: %s", self.job_id, exc.message)
        self._record_end(record, outcome, teardown, down_at=down_at)
        self._summarize()

    def _summarize(self) -> None:
        """summary.json for the attempt just ended (a retry's end writes it again)."""
        from ugro.jobresults import write_summary

        try:
            write_summary(self.jobs, self.jobs.find(self.job_id))
        except (OSError, UgroError) as exc:
            log.warning("summary of %s: %s", self.job_id, exc)

    def _record_end(
        self,
        record: JobRecord,
        outcome: Outcome,
        teardown: dict[str, dict[str, Any]],
        *,
        down_at: float | None = None,
    ) -> None:
        unreachable = sorted(n for n, r in teardown.items() if "unreachable" in r)
        survivors = {n: r["left"] for n, r in teardown.items() if r.get("left")}
        self.pending_cleanup = sorted(set(self.pending_cleanup) | set(unreachable))
        detail: dict[str, Any] = {
            "ended_at": iso(wall(outcome.at)),
            "teardown": teardown,
        }
        if outcome.problem is not None:
            detail["failure"] = outcome.problem.as_detail()
        if outcome.reason:
            detail["reason"] = outcome.reason
        if outcome.last_step is not None:
            detail["last_step"] = outcome.last_step
        if unreachable:
            detail["pending_cleanup"] = unreachable
        if survivors:
            detail["survivors"] = survivors
        if outcome.detected:
            detail["timeline"] = {
                "ended": round(wall(outcome.at), 3),
                "detected": round(wall(outcome.detected), 3),
                **({"down": round(wall(down_at), 3)} if down_at else {}),
            }
        written = self.jobs.record(self.job_id, outcome.state, attempt=record.attempt, **detail)  # type: ignore[arg-type]
        log.info(
            "%s %s (attempt %d)%s%s",
            self.job_id,
            outcome.state,
            record.attempt,
            f": {outcome.reason}" if outcome.reason else "",
            "" if written else " (not recorded: the attempt had already ended)",
        )

    # -- the next attempt -----------------------------------------------------------------------
    def _retry(self, record: JobRecord) -> bool:
        """Start the next attempt if this one may be retried; False when the job is over."""
        why_not = self._no_retry(record)
        if why_not:
            if record.state in ("failed", "lost") and self.options.retries:
                log.info("%s: not retrying: %s", self.job_id, why_not)
                noted = any(
                    e.get("event") == "not_retried" and e.get("attempt") == record.attempt
                    for e in record.detail.get("events", [])
                )
                if not noted:
                    self.jobs.note(
                        self.job_id, "not_retried", reason=why_not, attempt=record.attempt
                    )
            return False
        attempt = record.attempt + 1
        delay = min(self.options.backoff_s * 2 ** (record.attempt - 1), self.options.backoff_max_s)
        self._publish("waiting to retry", f"attempt {attempt} in {delay:.0f}s", force=True)
        if not self._sleep(delay):
            return False
        nodes = self._nodes_for_retry(record)
        if nodes is None:
            return False
        from ugro.launch import resume_args, start_attempt, stored_request

        request = stored_request(self.options.request)
        args = self._args_for(request, resume_args(request), nodes)
        if args is None:
            return False
        cause = (record.detail.get("failure") or {}).get("reason") or record.detail.get("reason")
        written = self.jobs.record(
            self.job_id,
            "launching",
            attempt=attempt,
            nodes=nodes,
            launcher_pid=os.getpid(),
            retry_of=record.attempt,
            retry_reason=cause,
        )
        if not written:
            return True  # someone else moved the job on: look again
        self.attempt = attempt
        self._publish("launching", f"attempt {attempt} on {', '.join(nodes)}", force=True)
        try:
            start_attempt(
                self.cluster, self.job_id, request, attempt=attempt, nodes=nodes, args=args
            )
        except UgroError as exc:
            log.warning("%s attempt %d did not start: %s", self.job_id, attempt, exc.message)
        return True

    def _args_for(
        self, request: Any, args: tuple[str, ...], nodes: list[str]
    ) -> tuple[str, ...] | None:
        """The next attempt's arguments: on fewer nodes than the job began with, the same
        global batch through more gradient accumulation (train_production.py only)."""
        from ugro.launch import (
            DEFAULT_SCRIPT,
            default_grad_accum,
            keep_global_batch,
            ranks_per_node,
        )

        config = self.jobs.config(self.job_id)
        original = list(config.get("nodes") or nodes)
        if set(nodes) == set(original):
            return args
        ranks = config.get("ranks_per_node") or ranks_per_node(config.get("commands") or {})
        before = sum(ranks.get(n, 1) for n in original)
        after = sum(ranks.get(n, 1) for n in nodes)
        directory = self.jobs.experiment_dir(self.job_id)
        kept = (
            keep_global_batch(args, default_grad_accum(directory), before, after)
            if request.script == DEFAULT_SCRIPT
            else None
        )
        if kept is None:
            why = (
                f"cannot keep the global batch on {after} of {before} ranks"
                if request.script == DEFAULT_SCRIPT
                else "only train_production.py can keep its global batch on fewer nodes"
            )
            self.jobs.note(self.job_id, "not_retried", reason=why)
            log.info("%s: not retrying on %s: %s", self.job_id, ", ".join(nodes), why)
        return kept

    def _no_retry(self, record: JobRecord) -> str | None:
        if self.watcher.stop_requested() is not None:
            return "the user stopped the job"
        if record.state not in ("failed", "lost"):
            return f"the job {record.state}"
        if record.attempt > self.options.retries:
            return f"no retries left ({self.options.retries} allowed)"
        failure = record.detail.get("failure") or {}
        if not failure and record.state == "failed":
            return "the launch itself failed: " + str(record.detail.get("reason") or "")
        if failure.get("exit_code") == USAGE_EXIT:
            return "the script refused its options (exit 2); retrying cannot fix that"
        if (
            failure.get("cause") in ("exit", "agent_exit")
            and record.detail.get("last_step") is None
        ):
            return "it failed before its first training step (a script or setup error)"
        if _out_of_memory(failure):
            earlier = [
                e
                for e in self.jobs.history()
                if e.get("job_id") == self.job_id
                and e.get("state") == "failed"
                and e.get("attempt", 1) < record.attempt
                and _out_of_memory(e.get("failure") or {})
                and e.get("last_step") == record.detail.get("last_step")
            ]
            if earlier:
                return f"out of memory at step {record.detail.get('last_step')} twice"
        return None

    def _nodes_for_retry(self, record: JobRecord) -> list[str] | None:
        """The job's nodes once they all answer; fewer (not below --min-nodes, master
        included) if some stay down past node_wait_s; None to give up."""
        wanted = list(self.jobs.config(self.job_id).get("nodes") or self.jobs.nodes(record))
        deadline = time.monotonic() + self.options.node_wait_s
        while True:
            # A node that was unreachable at the last teardown may still run the old attempt:
            # it is cleaned before it takes part again.
            dirty = set(self._clean_pending())
            up = [
                n
                for n in wanted
                if n not in dirty
                and NodeLink(self.cluster, self.cluster.node(n), self.job_id).probe()
            ]
            if len(up) == len(wanted):
                return wanted
            down = [n for n in wanted if n not in up]
            minimum = self.options.min_nodes
            # The lead holds the job's outputs (on the master, its experiment directory).
            if minimum is not None and len(up) >= minimum and wanted[0] in up:
                log.info(
                    "%s: retrying on %s without %s", self.job_id, ", ".join(up), ", ".join(down)
                )
                return up
            if time.monotonic() >= deadline:
                self.jobs.note(
                    self.job_id,
                    "not_retried",
                    attempt=record.attempt,
                    reason=(
                        f"{', '.join(down)} did not answer within {self.options.node_wait_s:.0f}s"
                    ),
                )
                return None
            self._publish("waiting for nodes", f"{', '.join(down)} unreachable", force=True)
            if not self._sleep(LEFTOVER_PROBE_S):
                return None

    def _sleep(self, seconds: float) -> bool:
        """Sleep, waking for a stop request (False then)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.watcher.stop_requested() is not None or self._gone():
                return False
            time.sleep(min(POLL_S, max(deadline - time.monotonic(), 0)))
        return True

    # -- leftovers ------------------------------------------------------------------------------
    def _pending(self) -> list[str]:
        """Nodes unreachable at a teardown whose leftovers have not been ended since."""
        pending: set[str] = set(self.pending_cleanup)
        for entry in self.jobs.history():
            if entry.get("job_id") != self.job_id:
                continue
            pending |= set(entry.get("pending_cleanup") or [])
            if entry.get("event") == "leftovers_cleaned":
                pending.discard(str(entry.get("node")))
        return sorted(pending)

    def _clean_pending(self) -> list[str]:
        """One pass: end the job's processes on each pending node that answers now; returns
        the nodes still pending."""
        still = []
        for name in self._pending():
            link = NodeLink(self.cluster, self.cluster.node(name), self.job_id)
            report = link.stop(grace=self.options.stop_grace_s) if link.probe() else None
            if report is None or "unreachable" in report:
                still.append(name)
                continue
            self.jobs.note(
                self.job_id,
                "leftovers_cleaned",
                node=name,
                signalled=report.get("signalled"),
                left=report.get("left"),
            )
            log.info(
                "%s: %s answers again; %s leftover processes ended",
                self.job_id,
                name,
                report.get("signalled"),
            )
        self.pending_cleanup = still
        return still

    def _chase_leftovers(self) -> None:
        """Kill the job's processes on nodes that were unreachable at teardown, once they
        answer (for cleanup_window_s at most)."""
        deadline = time.monotonic() + self.options.cleanup_window_s
        pending = self._clean_pending()
        while pending and time.monotonic() < deadline and not self._gone():
            self._publish(
                "cleanup", f"waiting for {', '.join(pending)} to kill what is left", force=True
            )
            time.sleep(LEFTOVER_PROBE_S)
            pending = self._clean_pending()
        if pending:
            self.jobs.note(self.job_id, "leftovers_unreached", nodes=pending)
        self.pending_cleanup = []


def end_orphaned_launch(job_id: str, grace: float = 5.0) -> int:
    """End what is left of a launch run for `job_id` on this machine (ansible-playbook and its
    ssh, marked by ugro.launch.LAUNCH_TAG); how many processes there were."""
    from ugro.launch import LAUNCH_TAG

    needle = f"{LAUNCH_TAG}={job_id}".encode()

    def remaining() -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    found.append(int(entry))
            except OSError:
                continue
        return [pid for pid in found if _alive(pid)]

    first = remaining()
    for number in (signal.SIGTERM, signal.SIGKILL):
        for pid in remaining():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, number)
        deadline = time.monotonic() + grace
        while remaining() and time.monotonic() < deadline:
            time.sleep(0.1)
    return len(first)


def _start_probe(link: NodeLink) -> _Probe:
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(link.probe()), daemon=True)
    thread.start()
    return _Probe(thread, result)


def _last_step(tracker: AttemptTracker) -> int | None:
    steps = tracker.steps()
    return max(steps.values()) if steps else None


def _out_of_memory(failure: dict[str, Any]) -> bool:
    text = " ".join(failure.get("tail") or []) + " " + str(failure.get("reason") or "")
    return "out of memory" in text.lower() or "OutOfMemoryError" in text


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m ugro.controller EXPERIMENT_DIR", file=sys.stderr)
        return 2
    directory = Path(argv[0])
    watcher = Watcher(directory)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if take_lock(watcher.lock_path) is None:
        log.info("another controller watches %s; leaving it to it", directory.name)
        return 0
    data = read_json(watcher.cluster_path)
    if not isinstance(data, dict):
        log.error("%s holds no cluster", watcher.cluster_path)
        return 2
    cluster = Cluster.from_json(data)
    # The jobs' lifecycle goes to logs/launcher.log too, as the launch's own lines do.
    from ugro.logsetup import attach_cluster_logs

    attach_cluster_logs(cluster)
    try:
        Controller(cluster, directory.name, watcher).run()
    except JobGone:
        log.info("%s: its experiment directory is gone; nothing left to watch", directory.name)
    except UgroError as exc:
        log.error("%s", exc.message)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
