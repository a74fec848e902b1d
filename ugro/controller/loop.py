"""The controller's loop: one job, from the history's view of it to its last state.

It reconciles what the history says with what the nodes say (observe, decide, act):

- `queued` (the daemon gave the job its nodes: ugro.queue.submit.dispatch): record `launching`
  and start it, as a launch would; a cancel recorded first wins, and then nothing starts.
  Queued in Slurm's queue: wait for its allocation, then launch there (ugro.controller.
  slurm_start).
- `launching`: wait for the launching process; if it died before the job ran, end its Ansible
  run, stop whatever started and record `lost` ("the launch was interrupted").
- `running`: watch the attempt (ugro.controller.watch) until it ends, then tear it down and
  record its one final state (ugro.controller.teardown).
- a final state: retry it (ugro.controller.retrying) or finish; then chase leftovers on nodes
  that were unreachable (ugro.controller.leftovers).

One controller runs per job (a lock the kernel frees when it dies); one started again after a
crash reads the history and the nodes and carries on from there, so no attempt starts twice.
"""

from __future__ import annotations

import logging
import os
import time

from ugro.controller.context import POLL_S, ControllerContext
from ugro.controller.leftovers import chase_leftovers
from ugro.controller.orphans import end_orphaned_launch
from ugro.controller.retrying import retry
from ugro.controller.slurm_start import start_when_allocated
from ugro.controller.slurm_watch import cancel
from ugro.controller.teardown import end_attempt, record_end, teardown
from ugro.controller.watch import Outcome, watch_attempt
from ugro.core.errors import UgroError
from ugro.core.processes import alive
from ugro.launch.attempt import start_attempt
from ugro.launch.definition import LaunchRequest, job_nodes
from ugro.records.controller_files import DONE
from ugro.records.history import JobRecord

log = logging.getLogger(__name__)


class Controller(ControllerContext):
    def run(self) -> None:
        log.info("controller for %s: pid %d", self.job_id, os.getpid())
        while not self.gone():
            record = self.jobs.find(self.job_id)
            self.attempt = record.attempt
            if record.state == "queued" and record.detail.get("slurm_job"):
                start_when_allocated(self, record)
            elif record.state == "queued":
                self._start_queued(record)
            elif record.state == "launching":
                self._await_launch(record)
            elif record.state == "running":
                end_attempt(self, record, watch_attempt(self, record))
            elif not retry(self, record):
                break
        if self.gone():
            log.info("controller for %s: its directory is gone; stopping", self.job_id)
            return
        chase_leftovers(self)
        self.publish(DONE, "", force=True)
        log.info("controller for %s: done", self.job_id)

    def _start_queued(self, record: JobRecord) -> None:
        """Start a queued job on the nodes the daemon gave it (options.json's request)."""
        request = LaunchRequest.from_json(self.options.request)
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
        self.publish("launching", f"starting on {', '.join(nodes)}", force=True)
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

    def _await_launch(self, record: JobRecord) -> None:
        """Wait while the launch runs; if its launcher dies before the job ran, clean up."""
        launcher = record.detail.get("launcher_pid")
        self.publish("launching", f"attempt {record.attempt} is starting", force=True)
        while isinstance(launcher, int) and launcher != os.getpid() and alive(launcher):
            time.sleep(POLL_S)
            if self.jobs.find(self.job_id).state != "launching":
                return
        if self.jobs.find(self.job_id).state != "launching":
            return
        # The launcher died between recording `launching` and `running` (or `failed`). Its
        # Ansible run may outlive it and still start the job: end that first, then the nodes.
        log.warning("%s: the launch (pid %s) ended before the job ran", self.job_id, launcher)
        orphans = end_orphaned_launch(self.job_id)
        if orphans:
            log.warning("%s: ended %d processes of the interrupted launch", self.job_id, orphans)
        started = time.monotonic()
        torn_down = teardown(self, self.jobs.nodes(record))
        cancel(self.cluster, record)  # through Slurm: its allocation back
        reason = "the launch was interrupted before the job ran"
        record_end(self, record, Outcome("lost", started, reason=reason), torn_down)
