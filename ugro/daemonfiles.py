"""The daemon's files under data/daemon/, and whether a daemon holds them.

Kept apart from ugro.daemon so that `ugro status`, `health` and `queue` can read the daemon's
state without importing what the daemon itself runs (they answer in a fraction of a second).

    data/daemon/lock        held (flock) by the live daemon: free means none runs
    data/daemon/state.json  what it knows: the queue and why each job waits, each node's verdict
    data/daemon/paused      present while the queue is held (`ugro queue --pause`)
    data/daemon/daemon.log  its log, when started in the background
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

from ugro.processes import lock_held
from ugro.state import read_json_dict


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

    def alive(self) -> bool:
        return lock_held(self.lock_path)

    def state(self) -> dict[str, Any]:
        return read_json_dict(self.state_path)

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
    since = state.get("started_at")
    when = (
        f", since {datetime.fromtimestamp(float(since)).isoformat(timespec='seconds')}"
        if since
        else ""
    )
    return (
        f"a daemon already runs for {files.dir.parent} (pid {state.get('pid', '?')}{when}); "
        f"its log: {files.log_path}"
    )
