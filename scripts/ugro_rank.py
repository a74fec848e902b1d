#!/usr/bin/env python3
"""Run one torchrun worker with its output in <log-dir>/<node>.rank<RANK>.log.

UGRO's launch puts this between torchrun and the training script:

    torchrun ... scripts/ugro_rank.py --log-dir logs -- train_production.py --epochs 1

so that every rank's log is named by its global rank (which c10d assigns only at rendezvous),
and its exit code lands beside it in <node>.rank<RANK>.exit. The script runs in this same
process, as `python script.py` would run it.

Two more things for the job's controller on the master:
- UGRO_PROGRESS_FILE names <node>.rank<RANK>.progress, the rank's progress heartbeat: a script
  writes {"step": N, "at": unix time} there after each step (train_production.py's
  ProgressCallback does; any script may), and a rank whose steps stop coming counts as hung.
- SIGTERM (torchrun ending its other ranks after one failed, or a stop) leaves exit code 143,
  so the controller tells the rank that failed first from the ranks ended because of it.
"""

from __future__ import annotations

import os
import runpy
import signal
import socket
import sys
import traceback


def main(argv: list[str]) -> int:
    if "--" not in argv or argv[:1] != ["--log-dir"] or len(argv) < 4:
        print("usage: ugro_rank.py --log-dir DIR -- SCRIPT [ARGS...]", file=sys.stderr)
        return 2
    split = argv.index("--")
    log_dir, (script, *args) = argv[1], argv[split + 1 :]
    rank = os.environ.get("RANK", "0")
    node = os.environ.get("UGRO_NODE") or socket.gethostname()
    base = os.path.join(log_dir, f"{node}.rank{rank}")
    os.makedirs(log_dir, exist_ok=True)
    os.environ["UGRO_PROGRESS_FILE"] = os.path.abspath(base + ".progress")
    fd = os.open(base + ".log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)

    script = os.path.abspath(script)
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(script))
    signal.signal(signal.SIGTERM, _terminated)
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    write_exit(base, code)
    return code


_TERMINATED = 143  # 128 + SIGTERM, as a shell reports it


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(_TERMINATED)


def write_exit(base: str, code: int) -> None:
    with open(base + ".exit.tmp", "w") as handle:
        handle.write(f"{code}\n")
    os.replace(base + ".exit.tmp", base + ".exit")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
