"""What every part of a job's controller shares: the job, its files, and what it publishes.

The controller's parts (watching an attempt, tearing it down, retrying, chasing leftovers) each
take this context: the cluster, the job's history and controller files, the options the launch
gave, and `publish`, which writes what the controller sees now to controller/state.json for
`ugro status`, `logs --follow` and the dashboard.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from typing import Any

from ugro.core.cluster import Cluster
from ugro.nodes.link import NodeLink
from ugro.records.controller_files import ControllerHandle, ControllerState
from ugro.records.history import Jobs

POLL_S = 0.5


class JobGone(Exception):
    """The job's experiment directory disappeared under its controller."""


def wall(monotonic_at: float) -> float:
    """A time.monotonic() instant as time.time()."""
    return time.time() - (time.monotonic() - monotonic_at)


def iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, timezone.utc).isoformat(timespec="milliseconds")


class ControllerContext:
    def __init__(self, cluster: Cluster, job_id: str, handle: ControllerHandle) -> None:
        self.cluster = cluster
        self.job_id = job_id
        self.handle = handle
        self.jobs = Jobs(cluster)
        self.options = handle.options()
        self.state = ControllerState(phase="starting")
        # Nodes unreachable at a teardown whose leftovers are still to be ended.
        self.pending_cleanup: list[str] = []
        self.attempt: int | None = None  # the attempt in hand, for state.json
        self._last_state_write = 0.0

    def gone(self) -> bool:
        """The job's experiment directory was removed (the project deleted, a sandbox taken
        down): there is nothing left to watch or write to."""
        return not self.handle.dir.is_dir()

    def link(self, name: str) -> NodeLink:
        return NodeLink(self.cluster, self.cluster.node(name), self.job_id)

    def publish(self, phase: str, message: str, *, force: bool = False, **seen: Any) -> None:
        """What the controller sees now. What the watching phase sees (`seen`: the nodes'
        silence, steps, stall) belongs to that phase and attempt only: any other phase clears
        it, so no reader takes one attempt's steps for the next. Written at most once a second
        unless forced."""
        self.state = ControllerState(
            phase=phase,
            message=message,
            attempt=self.attempt,
            pid=os.getpid(),
            updated_at=time.time(),
            pending_cleanup=tuple(self.pending_cleanup),
            **seen,
        )
        now = time.monotonic()
        if (not force and now - self._last_state_write < 1.0) or self.gone():
            return
        self._last_state_write = now
        self.handle.write_state(self.state)

    def sleep(self, seconds: float) -> bool:
        """Sleep, waking for a stop request (False then)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.handle.stop_requested() is not None or self.gone():
                return False
            time.sleep(min(POLL_S, max(deadline - time.monotonic(), 0)))
        return True
