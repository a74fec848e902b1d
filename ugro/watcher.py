"""A job's controller, seen from outside: its files, whether it lives, starting it, asking it.

Every job has one controller process on the master (ugro.controller), started detached by the
launch, that owns the job until it is over: it watches the nodes, decides the job's final state,
tears the job down, retries it, and writes all of that down. Commands talk to it through files
in the job's experiment directory, so nothing depends on the process that launched the job:

    controller/options.json   what it was asked to do (retries, timeouts, the launch request)
    controller/cluster.json   the cluster as the job was launched on it
    controller/state.json     what it sees now: phase, attempt, nodes' heartbeats, steps, stall
    controller/stop           a user's stop request (`ugro stop`)
    controller/lock           held (flock) by the live controller: free means none runs
    controller/controller.log its log

A controller that died (kill -9, a reboot of the master) is started again by the next command
that looks at the job (`ugro status`, `logs`, `results`, `stop`, or a following `launch`); the
new one picks the job up from the history and the nodes, and never starts an attempt twice.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ugro.cluster import Cluster
from ugro.processes import lock_held, spawn_detached
from ugro.state import read_json, read_json_dict, write_json_atomic

log = logging.getLogger(__name__)

DIR = "controller"
# The phases a controller reports; `done` means it has nothing left to do for the job.
DONE = "done"


@dataclass(frozen=True)
class ControllerOptions:
    retries: int = 0
    min_nodes: int | None = None
    hang_timeout: float | None = None  # None: derived from the job's own step times
    backoff_s: float = 5.0
    backoff_max_s: float = 60.0
    heartbeat_grace_s: float = 6.0
    stop_grace_s: float = 5.0
    node_wait_s: float = 300.0  # how long a retry waits for a lost node to answer again
    cleanup_window_s: float = 3600.0  # how long leftovers on an unreachable node are chased
    # The launch, to start the next attempts: script, args, nodes, allow_drift, extravars.
    request: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ControllerOptions:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class Watcher:
    """The files of one job's controller, and the process behind them."""

    def __init__(self, experiment_dir: Path) -> None:
        self.dir = experiment_dir / DIR

    @property
    def options_path(self) -> Path:
        return self.dir / "options.json"

    @property
    def cluster_path(self) -> Path:
        return self.dir / "cluster.json"

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    @property
    def stop_path(self) -> Path:
        return self.dir / "stop"

    @property
    def lock_path(self) -> Path:
        return self.dir / "lock"

    @property
    def log_path(self) -> Path:
        return self.dir / "controller.log"

    def exists(self) -> bool:
        return self.options_path.is_file()

    def prepare(self, cluster: Cluster, options: ControllerOptions) -> None:
        """Write what a controller needs; private to this user (the request may carry -e values)."""
        self.dir.mkdir(mode=0o700, exist_ok=True)
        # A new start (a launch, a resume): the previous controller's last word and any stop
        # request belong to the attempts before.
        self.state_path.unlink(missing_ok=True)
        self.stop_path.unlink(missing_ok=True)
        # options.json last: its presence is what says a controller may run (exists()), so a
        # crash between the two leaves no controller without its cluster.
        for path, data in (
            (self.cluster_path, cluster.to_json()),
            (self.options_path, asdict(options)),
        ):
            write_json_atomic(path, data)
            path.chmod(0o600)

    def options(self) -> ControllerOptions:
        return ControllerOptions.from_json(read_json(self.options_path) or {})

    def state(self) -> dict[str, Any]:
        return read_json_dict(self.state_path)

    def alive(self) -> bool:
        """Whether a controller holds the job's lock (the kernel frees it when one dies)."""
        return lock_held(self.lock_path)

    def finished(self) -> bool:
        return self.state().get("phase") == DONE

    def working(self) -> bool:
        """Whether a live controller may still start another attempt: not done, not past its
        retries (cleanup), and holding its lock."""
        return (
            self.exists()
            and not self.finished()
            and self.state().get("phase") != "cleanup"
            and self.alive()
        )

    def spawn(self) -> int:
        """Start the controller, detached (its own session, no terminal): closing the terminal
        or killing `ugro` leaves it running. Returns its pid. If another is already running,
        the new one sees the lock taken and exits at once."""
        self.dir.mkdir(mode=0o700, exist_ok=True)
        process = spawn_detached(
            [sys.executable, "-m", "ugro.controller", str(self.dir.parent)], self.log_path
        )
        log.info("controller for %s started (pid %s)", self.dir.parent.name, process.pid)
        return process.pid

    def ensure(self) -> bool:
        """Start the controller again if the job still needs one and none runs; True if this
        call started one."""
        if not self.exists() or self.alive() or self.finished():
            return False
        self.spawn()
        return True

    def request_stop(self, by: str = "the user") -> None:
        self.dir.mkdir(mode=0o700, exist_ok=True)
        temporary = self.stop_path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"by": by, "at": time.time()}))
        os.replace(temporary, self.stop_path)

    def stop_requested(self) -> dict[str, Any] | None:
        try:
            request = json.loads(self.stop_path.read_text())
        except (OSError, ValueError):
            return None
        return request if isinstance(request, dict) else {"by": "the user"}
