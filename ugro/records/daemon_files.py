"""The daemon's files under data/daemon/, and whether a daemon holds them.

The daemon (ugro.daemon) writes them; `ugro status`, `health`, `queue`, a launch's preflight and
the dashboard read them here, without importing what the daemon itself runs (they answer in a
fraction of a second). As pueue's shared state: neither side imports the other.

    data/daemon/lock        held (flock) by the live daemon: free means none runs
    data/daemon/state.json  what it knows (DaemonState): the queue and why each job waits, each
                            node's verdict and last full report, its probes' times
    data/daemon/paused      present while the queue is held (`ugro queue --pause`)
    data/daemon/daemon.log  its log, when started in the background
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ugro.core.files import json_float, json_int, json_mapping, read_json_dict, write_json_atomic
from ugro.core.processes import lock_held


@dataclass(frozen=True)
class QueueEntry:
    """A queued job as the daemon last scheduled it: where it starts, or why it waits."""

    job_id: str
    position: int
    nodes: tuple[str, ...] = ()  # empty while it waits
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "position": self.position,
            "nodes": list(self.nodes),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class ProbeTimes:
    interval_s: float = 60.0
    last_light: float | None = None
    next_light: float | None = None
    last_deep: float | None = None
    next_deep: float | None = None


@dataclass(frozen=True)
class DaemonState:
    """data/daemon/state.json. `nodes` holds each node's last verdict as the health monitor
    writes it (ugro.health.monitor.Sample.to_json), `reports` each healthy node's last full
    probe report with its time ({"at", "report"}), what a launch may take instead of a probe."""

    pid: int | None = None
    cluster: str = ""
    config: str | None = None
    started_at: float | None = None
    updated_at: float | None = None
    stopped_at: float | None = None
    activity: str = ""
    paused: bool = False
    dashboard: str | None = None  # its address, without the token
    cursor: int | None = None  # bytes of the job history whose ends have been looked at
    pending_notices: Mapping[str, int] = field(default_factory=dict)  # job id -> attempt
    queue: tuple[QueueEntry, ...] = ()
    busy: Mapping[str, str] = field(default_factory=dict)  # node -> what occupies it
    nodes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    reports: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    probes: ProbeTimes = ProbeTimes()

    @property
    def waiting(self) -> int:
        """How many queued jobs wait (have no nodes yet)."""
        return sum(1 for entry in self.queue if not entry.nodes)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "pid": self.pid,
            "cluster": self.cluster,
            "config": self.config,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "activity": self.activity,
            "paused": self.paused,
            "dashboard": self.dashboard,
            "cursor": self.cursor,
            "pending_notices": dict(self.pending_notices),
            "queue": [entry.to_json() for entry in self.queue],
            "busy": dict(self.busy),
            "nodes": {name: dict(sample) for name, sample in self.nodes.items()},
            "reports": {name: dict(report) for name, report in self.reports.items()},
            "probes": {
                "interval_s": self.probes.interval_s,
                "last_light": self.probes.last_light,
                "next_light": self.probes.next_light,
                "last_deep": self.probes.last_deep,
                "next_deep": self.probes.next_deep,
            },
        }
        if self.stopped_at is not None:
            data["stopped_at"] = self.stopped_at
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DaemonState:
        """Any state.json a daemon of this or an earlier release wrote; a missing or foreign
        key is its default."""
        probes = json_mapping(data.get("probes"))
        queue = [e for e in data.get("queue") or [] if isinstance(e, Mapping) and "job_id" in e]
        return cls(
            pid=json_int(data.get("pid")),
            cluster=str(data.get("cluster") or ""),
            config=str(data["config"]) if data.get("config") else None,
            started_at=json_float(data.get("started_at")),
            updated_at=json_float(data.get("updated_at")),
            stopped_at=json_float(data.get("stopped_at")),
            activity=str(data.get("activity") or ""),
            paused=bool(data.get("paused")),
            dashboard=str(data["dashboard"]) if data.get("dashboard") else None,
            cursor=json_int(data.get("cursor")),
            pending_notices={
                str(k): int(v)
                for k, v in json_mapping(data.get("pending_notices")).items()
                if isinstance(v, int)
            },
            queue=tuple(
                QueueEntry(
                    job_id=str(entry["job_id"]),
                    position=json_int(entry.get("position")) or index + 1,
                    nodes=tuple(str(n) for n in entry.get("nodes") or ()),
                    reason=str(entry.get("reason") or ""),
                )
                for index, entry in enumerate(queue)
            ),
            busy={str(k): str(v) for k, v in json_mapping(data.get("busy")).items()},
            nodes={
                str(k): v for k, v in json_mapping(data.get("nodes")).items() if json_mapping(v)
            },
            reports={
                str(k): v for k, v in json_mapping(data.get("reports")).items() if json_mapping(v)
            },
            probes=ProbeTimes(
                interval_s=json_float(probes.get("interval_s")) or 60.0,
                last_light=json_float(probes.get("last_light")),
                next_light=json_float(probes.get("next_light")),
                last_deep=json_float(probes.get("last_deep")),
                next_deep=json_float(probes.get("next_deep")),
            ),
        )


def _by_node(value: Any) -> dict[str, Mapping[str, Any]]:
    """{node: an object}, a node whose value is not one left out."""
    return {str(k): v for k, v in json_mapping(value).items() if isinstance(v, Mapping) and v}


class DaemonFiles:
    """The daemon's files under data/daemon/, and whether a daemon holds them."""

    def __init__(self, data: Path) -> None:
        self.dir = data / "daemon"

    @property
    def lock_path(self) -> Path:
        return self.dir / "lock"

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    @property
    def log_path(self) -> Path:
        return self.dir / "daemon.log"

    @property
    def paused_path(self) -> Path:
        return self.dir / "paused"

    @property
    def token_path(self) -> Path:
        """The dashboard's token, when the daemon made one (0600)."""
        return self.dir / "dashboard_token"

    def alive(self) -> bool:
        return lock_held(self.lock_path)

    def state(self) -> DaemonState:
        return DaemonState.from_json(read_json_dict(self.state_path))

    def live_state(self) -> DaemonState | None:
        """The state of the daemon that runs now; None when none does."""
        return self.state() if self.alive() else None

    def write_state(self, state: DaemonState) -> None:
        write_json_atomic(self.state_path, state.to_json())

    def paused(self) -> bool:
        return self.paused_path.exists()

    def set_paused(self, paused: bool) -> None:
        if paused:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.paused_path.write_text(f"{time.time()}\n")
        else:
            self.paused_path.unlink(missing_ok=True)


def already_running(files: DaemonFiles) -> str:
    state = files.state()
    when = (
        f", since {datetime.fromtimestamp(state.started_at).isoformat(timespec='seconds')}"
        if state.started_at
        else ""
    )
    return (
        f"a daemon already runs for {files.dir.parent} (pid {state.pid or '?'}{when}); "
        f"its log: {files.log_path}"
    )
