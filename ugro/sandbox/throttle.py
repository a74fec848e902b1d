"""A sandbox node held to a share of the CPU: `ugro sandbox fault NODE cpu --percent N`.

The stand-in for a slower machine. These hosts mount cgroup2 without the cpu controller, and
Debian's cpulimit limits each process on its own (with --monitor-forks it did not catch the
processes a node starts later over SSH), so this does what cpulimit does, for the node's
processes as one group: in every period of PERIOD_S they run for N% of it and are stopped
(SIGSTOP) for the rest. The group is every process in the node's network namespace but its
sshd, read afresh every MEMBERS_EVERY_S. On SIGTERM every one of them is continued before it exits.

Run as `python -m ugro.sandbox.throttle NETNS PERCENT` (detached, by the sandbox).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

from ugro.core import processes

# Short periods keep the share proportional: with 100 ms, a step needing 20 ms of CPU took a
# whole period whatever its size (its 25 ms ran it, then it waited), so a smaller batch on the
# slow node did not make it faster, and balancing could not help. At 20 ms the share holds for
# steps of a few milliseconds too.
PERIOD_S = 0.02
# Who is in the node is read this often (a /proc scan costs a few milliseconds); a process it
# starts meanwhile runs unthrottled until then.
MEMBERS_EVERY_S = 0.25


def namespace_inode(netns: str) -> int:
    return os.stat(f"/run/netns/{netns}").st_ino


def members(inode: int, *, every: bool = False) -> list[int]:
    """The processes whose network namespace is the node's, but for its sshd: stopped, sshd's
    sessions close as they open (its monitor sees the child stop). What the node computes runs
    under it, and is throttled."""
    return processes.in_network_namespace(inode, but=None if every else "sshd")


def _same_namespace(netns: str, inode: int) -> bool:
    try:
        return namespace_inode(netns) == inode
    except OSError:
        return False


def keep_time() -> None:
    """This process ahead of every ordinary one (real-time FIFO, else the highest niceness).

    The node's window ends only when the throttle wakes to stop it; on a loaded machine (CI's
    other lane busy on both cores) an ordinary process may wait its turn to wake, and the
    window runs on. (CI once measured a node held to 25% as fast as its peers.) Its work is a
    few signals per period: it cannot starve anything."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        print("throttle: real-time (SCHED_FIFO)", flush=True)
    except (OSError, AttributeError):
        with contextlib.suppress(OSError):
            os.nice(-20)
        print(f"throttle: no real-time scheduling here; niceness {os.nice(0)}", flush=True)


def run(netns: str, percent: float) -> None:
    keep_time()
    inode = namespace_inode(netns)
    share = min(max(percent / 100.0, 0.01), 1.0)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    group: list[int] = []
    read_at = 0.0
    try:
        while not stopping:
            if time.monotonic() - read_at >= MEMBERS_EVERY_S:
                if not _same_namespace(netns, inode):
                    # The node is gone (`sandbox down`, however its throttle was missed): a new
                    # namespace may reuse the inode, and its processes are not this node's.
                    return
                group, read_at = members(inode), time.monotonic()
            began = time.monotonic()
            processes.send(group, signal.SIGCONT)
            time.sleep(PERIOD_S * share)
            if stopping:
                break
            processes.send(group, signal.SIGSTOP)
            # The pause is sized from how long the node really ran: a 5 ms sleep here took
            # 7.5 ms (the timer's slack, a late wakeup), and with a fixed pause a node held to
            # 25% ran 29% of the time (measured). Sized so, the share holds whatever the timer
            # does.
            time.sleep((time.monotonic() - began) * (1 - share) / share)
    finally:
        # What it stopped runs again; when the node is gone, only that (the inode may be
        # another namespace's by now, whose stopped processes are not ours to continue).
        alive = _same_namespace(netns, inode)
        processes.send(members(inode, every=True) if alive else group, signal.SIGCONT)


def continue_all(netns: str) -> None:
    """Every process of the node running again (after its throttle ended, however it ended)."""
    with contextlib.suppress(OSError):
        processes.send(members(namespace_inode(netns), every=True), signal.SIGCONT)


if __name__ == "__main__":
    run(sys.argv[1], float(sys.argv[2]))
