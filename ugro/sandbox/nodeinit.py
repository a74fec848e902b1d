"""Runs inside a node's fresh namespaces: set the node's hostname, hide the programs named in
$UGRO_SANDBOX_HIDE (colon-separated paths: /dev/null bound over each, in the node's own mount
namespace only), then become the given program.

Started as `ip netns exec NS unshare --uts python -m ugro.sandbox.nodeinit HOSTNAME PROGRAM ...`
so that no shell ever sees the arguments.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

HIDE_ENV = "UGRO_SANDBOX_HIDE"


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit("usage: nodeinit HOSTNAME PROGRAM [ARGS...]")
    hostname, program = argv[0], argv[1:]
    socket.sethostname(hostname)
    for path in filter(None, os.environ.pop(HIDE_ENV, "").split(":")):
        subprocess.run(["mount", "--bind", "/dev/null", path], check=True)
    os.execv(program[0], program)  # noqa: S606 - becoming the program (sshd) is the point


if __name__ == "__main__":
    main(sys.argv[1:])
