"""Long-lived processes on the master: the lock that says one runs, and starting one detached.

A job's controller and the daemon each hold an flock on a file of their own for their whole
life: the kernel frees it when the process dies however it dies, so "does one run" is a
non-blocking lock attempt, immune to stale pid files and pid reuse.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path


def take_lock(path: Path) -> int | None:
    """Hold `path`'s lock for the life of this process (the descriptor stays open); None if
    another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def lock_held(path: Path) -> bool:
    """Whether a live process holds `path`'s lock."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def spawn_detached(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start `argv` in a session of its own, without a terminal, its output appended to
    `log_path`: closing the terminal or killing the caller leaves it running."""
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
            close_fds=True,
        )
