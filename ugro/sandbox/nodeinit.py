"""Runs inside a fresh UTS namespace: set the node's hostname, then become the given program.

Started as `ip netns exec NS unshare --uts python -m ugro.sandbox.nodeinit HOSTNAME PROGRAM ...`
so that no shell ever sees the arguments.
"""

from __future__ import annotations

import os
import socket
import sys


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit("usage: nodeinit HOSTNAME PROGRAM [ARGS...]")
    hostname, program = argv[0], argv[1:]
    socket.sethostname(hostname)
    os.execv(program[0], program)  # noqa: S606 - becoming the program (sshd) is the point


if __name__ == "__main__":
    main(sys.argv[1:])
