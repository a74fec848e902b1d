"""The first process of a PID namespace of its own: it runs one command and, while it waits,
reaps every process the namespace's orphans leave behind, as init does; its exit code is the
command's.

scripts/test.sh runs the tests that do not use the session's sandbox in such a namespace
(`unshare --pid --fork --kill-child --mount-proc`), beside the sandbox's lane: a machine's
processes are its own, as on two real hosts. The jobs each lane starts on this machine (both
lanes' masters are this machine) then never see each other's: a launch refuses a node only for
UGRO processes in its own PID namespace (roles/ugro_health/module_utils/ugro_jobprocs.py).

    python tests/first_process.py COMMAND [ARGS...]
"""

from __future__ import annotations

import os
import signal
import sys


def main(argv: list[str]) -> int:
    if not argv:
        sys.exit("usage: first_process.py COMMAND [ARGS...]")
    child = os.fork()
    if child == 0:
        os.execvp(argv[0], argv)  # noqa: S606 - becoming the command (an argv) is the point
    # PID 1 gets only the signals it handles: pass a stop on to the command.
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda received, _frame: os.kill(child, received))
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code  # a signal's number, as a shell says it


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
