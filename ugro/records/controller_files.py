"""A job's controller seen from outside: its files, and a handle on the process behind them.

Every job has one controller process on the master (ugro.controller), started detached by the
launch, that owns the job until it is over: it watches the nodes, decides the job's final state,
tears the job down, retries it, and writes all of that down. Commands talk to it through files
in the job's experiment directory, so nothing depends on the process that launched the job:

    controller/options.json   what it was asked to do (ControllerOptions: retries, timeouts,
                              the launch request)
    controller/cluster.json   the cluster as the job was launched on it
    controller/state.json     what it sees now (ControllerState: phase, attempt, the nodes'
                              heartbeats, steps, stall, the next attempt's start)
    controller/stop           a user's stop request (`ugro stop`)
    controller/lock           held (flock) by the live controller: free means none runs
    controller/controller.log its log

`ControllerFiles` reads and writes them; `ControllerHandle` adds the process: whether it lives,
starting it, starting it again. A controller that died (kill -9, a reboot of the master) is
started again by the next command that looks at the job (`ugro status`, `logs`, `results`,
`stop`, or a following `launch`); the new one picks the job up from the history and the nodes,
and never starts an attempt twice.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ugro.core.cluster import Cluster
from ugro.core.files import (
    json_float,
    json_int,
    json_mapping,
    read_json,
    read_json_dict,
    write_json_atomic,
)
from ugro.core.processes import lock_held, spawn_detached

log = logging.getLogger(__name__)

DIR = "controller"
# The phases a controller reports. `done`: it has nothing left to do for the job; `cleanup`:
# past its retries, it only chases leftovers on nodes that were unreachable.
DONE = "done"
CLEANUP = "cleanup"
WAITING_TO_RETRY = "waiting to retry"


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
    # The launch, to start the next attempts (ugro.launch.definition.LaunchRequest.to_json).
    request: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ControllerOptions:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ControllerState:
    """controller/state.json: what the controller sees now. What the watching phase sees (the
    nodes' silence, steps, stall) belongs to that phase and attempt only."""

    phase: str = ""
    message: str = ""
    attempt: int | None = None
    pid: int | None = None
    updated_at: float | None = None
    pending_cleanup: tuple[str, ...] = ()
    # Seconds since each node's last heartbeat, and each rank's last step ("node/rank").
    silent_s: Mapping[str, float] = field(default_factory=dict)
    steps: Mapping[str, int] = field(default_factory=dict)
    stalled_s: float | None = None
    hang_timeout_s: float | None = None
    # Waiting to retry: the attempt that comes next, and when it starts (time.time()).
    next_attempt: int | None = None
    retry_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.phase == DONE

    @property
    def past_retries(self) -> bool:
        """Nothing more will start: done, or only chasing leftovers."""
        return self.phase in (DONE, CLEANUP)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "phase": self.phase,
            "message": self.message,
            "attempt": self.attempt,
            "pid": self.pid,
            "updated_at": self.updated_at,
            "pending_cleanup": list(self.pending_cleanup),
        }
        if self.silent_s:
            data["nodes"] = {name: {"silent_s": s} for name, s in self.silent_s.items()}
        if self.steps:
            data["steps"] = dict(self.steps)
        for key in ("stalled_s", "hang_timeout_s", "next_attempt", "retry_at"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ControllerState:
        """Any state.json a controller of this or an earlier release wrote (missing or foreign
        keys are defaults)."""
        nodes = json_mapping(data.get("nodes"))
        steps = json_mapping(data.get("steps"))
        return cls(
            phase=str(data.get("phase") or ""),
            message=str(data.get("message") or ""),
            attempt=json_int(data.get("attempt")),
            pid=json_int(data.get("pid")),
            updated_at=json_float(data.get("updated_at")),
            pending_cleanup=tuple(str(n) for n in data.get("pending_cleanup") or ()),
            silent_s={
                str(name): json_float(seen.get("silent_s")) or 0.0
                for name, seen in nodes.items()
                if isinstance(seen, Mapping)
            },
            steps={str(k): int(v) for k, v in steps.items() if isinstance(v, int | float)},
            stalled_s=json_float(data.get("stalled_s")),
            hang_timeout_s=json_float(data.get("hang_timeout_s")),
            next_attempt=json_int(data.get("next_attempt")),
            retry_at=json_float(data.get("retry_at")),
        )


class ControllerFiles:
    """The files of one job's controller, under its experiment directory."""

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
        """Whether the job has a controller at all (options.json is written last)."""
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
            (self.options_path, options.to_json()),
        ):
            write_json_atomic(path, data)
            path.chmod(0o600)

    def options(self) -> ControllerOptions:
        return ControllerOptions.from_json(read_json(self.options_path) or {})

    def cluster(self) -> Cluster | None:
        data = read_json(self.cluster_path)
        return Cluster.from_json(data) if isinstance(data, dict) else None

    def state(self) -> ControllerState:
        return ControllerState.from_json(read_json_dict(self.state_path))

    def write_state(self, state: ControllerState) -> None:
        write_json_atomic(self.state_path, state.to_json())

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


class ControllerHandle(ControllerFiles):
    """A job's controller process, through its files: alive or not, started, started again."""

    def alive(self) -> bool:
        """Whether a controller holds the job's lock (the kernel frees it when one dies)."""
        return lock_held(self.lock_path)

    def finished(self) -> bool:
        return self.state().finished

    def working(self) -> bool:
        """Whether a live controller may still start another attempt: not done, not past its
        retries (cleanup), and holding its lock."""
        return self.exists() and not self.state().past_retries and self.alive()

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
