"""Runs inside a node's fresh namespaces: set the node's hostname, bind the node's own
directories over the paths named in $UGRO_SANDBOX_PRIVATE and mount a cgroup file system (a
Slurm sandbox's munge state and slurmd's need), hide
the programs named in $UGRO_SANDBOX_HIDE (colon-separated paths: /dev/null bound over each), all
in the node's own mount namespace only, then become the given program.

Started as `ip netns exec NS unshare --uts python -m ugro.sandbox.nodeinit HOSTNAME PROGRAM ...`
so that no shell ever sees the arguments.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

HIDE_ENV = "UGRO_SANDBOX_HIDE"
PRIVATE_ENV = "UGRO_SANDBOX_PRIVATE"  # SOURCE=TARGET pairs, colon-separated
# "v1" or "v2": the cgroup file system to mount on /sys/fs/cgroup, the host's kind. `ip netns
# exec` mounts a fresh /sys without it, and slurmd will not start without one (it reads it even
# with proctrack/linuxproc); nothing is limited through it.
CGROUP_ENV = "UGRO_SANDBOX_CGROUP"
_CGROUP_MOUNTS = {
    "v1": [
        ["mount", "-t", "tmpfs", "cgroup_root", "/sys/fs/cgroup"],
        ["mkdir", "/sys/fs/cgroup/systemd"],
        ["mount", "-t", "cgroup", "-o", "none,name=systemd", "cgroup", "/sys/fs/cgroup/systemd"],
    ],
    "v2": [["mount", "-t", "cgroup2", "cgroup2", "/sys/fs/cgroup"]],
}


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit("usage: nodeinit HOSTNAME PROGRAM [ARGS...]")
    hostname, program = argv[0], argv[1:]
    socket.sethostname(hostname)
    for argv_ in _CGROUP_MOUNTS.get(os.environ.pop(CGROUP_ENV, ""), []):
        subprocess.run(argv_, check=True)
    for pair in filter(None, os.environ.pop(PRIVATE_ENV, "").split(":")):
        source, target = pair.split("=", 1)
        subprocess.run(["mount", "--bind", source, target], check=True)
    for path in filter(None, os.environ.pop(HIDE_ENV, "").split(":")):
        subprocess.run(["mount", "--bind", "/dev/null", path], check=True)
    os.execv(program[0], program)  # noqa: S606 - becoming the program (sshd) is the point


if __name__ == "__main__":
    main(sys.argv[1:])
