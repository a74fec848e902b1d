"""Starting and stopping the daemon from a command (`ugro daemon start|stop`)."""

from __future__ import annotations

import os
import signal
import sys
import time

from ugro.core.errors import UsageError
from ugro.core.processes import spawn_detached
from ugro.records.daemon_files import DaemonFiles


def spawn(files: DaemonFiles, config: str | None, *, wait_s: float = 20.0) -> int:
    """Start the daemon detached (its own session, its output in daemon.log); its pid once it
    holds its lock."""
    files.dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ugro.daemon", *(["--config", config] if config else [])]
    process = spawn_detached(argv, files.log_path)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if files.alive() and files.state().pid == process.pid:
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
    pid = files.state().pid
    if pid is None:
        raise UsageError(f"a daemon holds {files.lock_path} but {files.state_path} names no pid")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while files.alive():
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + wait_s
        time.sleep(0.1)
    return pid
