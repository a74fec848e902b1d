"""A Slurm job's own state beside the heartbeats (`--scheduler slurm`).

The nodes' heartbeats say what the job does once Slurm has started it, as for any job: a rank
that fails, a node that goes silent, a hang. Slurm says what they cannot: that the job waits in
its queue, and why (Resources, Priority, ReqNodeNotAvail), and that Slurm ended it itself: a
cancel from outside UGRO, a time limit, a node Slurm gave up on. Slurm is asked every few
seconds, on the master, where slurmctld answers at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ugro.core.cluster import Cluster
from ugro.core.errors import UgroError
from ugro.records.history import JobRecord
from ugro.slurm import jobs as slurm_jobs
from ugro.slurm.jobs import SlurmJob

log = logging.getLogger(__name__)

ASK_EVERY_S = 2.0
# A job Slurm ended after it started: its nodes' heartbeats get this long to show why (an exit
# code, a supervisor gone) before Slurm's word is the reason.
ENDED_GRACE_S = 10.0
# Slurm's ends that say a node went, not the job.
_LOST = frozenset({"NODE_FAIL", "BOOT_FAIL"})


@dataclass(frozen=True)
class SlurmEnd:
    state: str  # UGRO's: failed | lost
    reason: str


class SlurmFollower:
    def __init__(self, cluster: Cluster, slurm_id: str) -> None:
        self.cluster = cluster
        self.slurm_id = slurm_id
        self.seen: SlurmJob | None = None
        self.forgotten = False  # Slurm no longer knows the job (MinJobAge after its end)
        self._next_ask = 0.0
        self._ended_at: float | None = None

    @classmethod
    def of(cls, cluster: Cluster, record: JobRecord) -> SlurmFollower | None:
        slurm_id = record.detail.get("slurm_job")
        return cls(cluster, str(slurm_id)) if slurm_id else None

    def look(self, now: float) -> None:
        if now < self._next_ask:
            return
        self._next_ask = now + ASK_EVERY_S
        try:
            self.seen = slurm_jobs.job(self.cluster, self.slurm_id)
        except UgroError as exc:  # slurmctld restarting, say: ask again next time
            log.warning("Slurm job %s: %s", self.slurm_id, exc.message)
            return
        self.forgotten = self.seen is None

    def note(self) -> str:
        """What to show beside the job while Slurm holds it back."""
        if self.seen is None or not self.seen.pending:
            return ""
        why = "" if self.seen.reason == "None" else f" ({self.seen.reason})"
        return f"waiting in Slurm's queue as job {self.slurm_id}{why}"

    def ended(self, now: float, *, started: bool) -> SlurmEnd | None:
        """Slurm ended the job and the heartbeats have not said why within the grace (at once
        if no supervisor ever started)."""
        if not (self.forgotten or (self.seen is not None and self.seen.ended)):
            return None
        state = self.seen.state if self.seen is not None else "ended"
        self._ended_at = self._ended_at or now
        if started and now - self._ended_at < ENDED_GRACE_S:
            return None
        when = "" if started else " before it started"
        return SlurmEnd(
            "lost" if state in _LOST else "failed",
            f"Slurm ended its job {self.slurm_id}{when} ({state})",
        )


def cancel(cluster: Cluster, record: JobRecord) -> None:
    """Take the attempt's job out of Slurm (after UGRO's own teardown of a job that did not
    succeed): its allocation is freed for the next job, and Slurm shows it cancelled. A job
    Slurm already ended stays as it is."""
    slurm_id = record.detail.get("slurm_job")
    if slurm_id:
        cancel_job(cluster, str(slurm_id))


def cancel_job(cluster: Cluster, slurm_id: str) -> None:
    try:
        slurm_jobs.cancel(cluster, slurm_id)
    except UgroError as exc:
        log.warning("cancelling Slurm job %s: %s", slurm_id, exc.message)
