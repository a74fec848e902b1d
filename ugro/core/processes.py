"""Processes on this machine (the master): the one place that reads /proc, and the lock and
detached start that long-lived processes use.

A job's controller and the daemon each hold an flock on a file of their own for their whole
life: the kernel frees it when the process dies however it dies, so "does one run" is a
non-blocking lock attempt, immune to stale pid files and pid reuse.

What the master looks for in /proc: the processes of a launch whose launcher died (tagged in
their environment, ugro.controller.orphans), and a sandbox node's processes (those in its
network namespace, ugro.sandbox). A job's processes on a node are the node's own business: the
node-side reader is roles/ugro_health/module_utils/ugro_jobprocs.py, reached over SSH.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

_PROC = "/proc"


# --- one process ----------------------------------------------------------------------------


def alive(pid: int | None) -> bool:
    """Whether `pid` is a live process: a zombie (ended, not yet reaped) counts as gone, since
    `kill -0` still answers for one."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's, and alive
    return state_letter(pid) not in (None, "Z")


def state_letter(pid: int) -> str | None:
    """The state letter of /proc/<pid>/stat (R, S, T, Z...); None when it is gone."""
    try:
        with open(f"{_PROC}/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def environment(pid: int) -> list[bytes]:
    """The process's environment as NAME=VALUE entries (raises OSError when it is gone or
    not readable)."""
    return Path(f"{_PROC}/{pid}/environ").read_bytes().split(b"\0")


def command_name(pid: int) -> str:
    """/proc/<pid>/comm (raises OSError when it is gone)."""
    with open(f"{_PROC}/{pid}/comm", encoding="utf-8", errors="replace") as handle:
        return handle.read().strip()


def network_namespace(pid: int) -> int:
    """The inode of the process's network namespace (raises OSError when it is gone)."""
    return os.stat(f"{_PROC}/{pid}/ns/net").st_ino


# --- finding processes ------------------------------------------------------------------------


def other_pids() -> Iterator[int]:
    """Every process id in /proc but this process's own."""
    own = os.getpid()
    for entry in os.listdir(_PROC):
        if entry.isdigit() and int(entry) != own:
            yield int(entry)


def find(test: Callable[[int], bool]) -> list[int]:
    """The processes for which `test(pid)` holds; one that ends (or is not ours to read) while
    it is looked at is left out."""
    found = []
    for pid in other_pids():
        try:
            if test(pid):
                found.append(pid)
        except OSError:
            continue
    return found


def tagged(name: str, value: str) -> list[int]:
    """Live processes whose environment holds NAME=VALUE (a launch's Ansible run, say)."""
    needle = f"{name}={value}".encode()
    return [pid for pid in find(lambda pid: needle in environment(pid)) if alive(pid)]


def in_network_namespace(inode: int, *, but: str | None = None) -> list[int]:
    """The processes in the network namespace `inode`, but those whose command name starts
    with `but` (a sandbox node's sshd, say)."""

    def member(pid: int) -> bool:
        if network_namespace(pid) != inode:
            return False
        return but is None or not command_name(pid).startswith(but)

    return find(member)


def of_user(uid: int) -> list[int]:
    return find(lambda pid: os.stat(f"{_PROC}/{pid}").st_uid == uid)


# --- signals ----------------------------------------------------------------------------------


def send(pids: Iterable[int], number: int) -> None:
    """Signal each of `pids`; a process already gone (or not ours) is skipped."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, number)


def end(
    pids: Iterable[int] | Callable[[], list[int]], *, grace: float = 0.0, wait: float = 5.0
) -> None:
    """SIGTERM (when a grace period is given), then SIGKILL what is left, and wait up to `wait`
    seconds for them to be gone. `pids` may be a function that finds them again each time (a
    process group that forks)."""
    remaining = pids if callable(pids) else _still_alive(list(pids))
    if grace > 0:
        send(remaining(), signal.SIGTERM)
        _wait_until_gone(remaining, grace)
    send(remaining(), signal.SIGKILL)
    _wait_until_gone(remaining, wait)


def _still_alive(pids: list[int]) -> Callable[[], list[int]]:
    pids = [p for p in set(pids) if p > 1 and p != os.getpid()]
    return lambda: [p for p in pids if alive(p)]


def _wait_until_gone(remaining: Callable[[], list[int]], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while remaining() and time.monotonic() < deadline:
        time.sleep(0.05)


# --- long-lived processes ---------------------------------------------------------------------


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


def spawn_detached(
    argv: list[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `argv` in a session of its own, without a terminal, its output appended to
    `log_path`: closing the terminal or killing the caller leaves it running."""
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
            close_fds=True,
        )
