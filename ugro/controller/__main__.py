"""python -m ugro.controller EXPERIMENT_DIR: the job's controller process.

Running jobs and their launchers name this entry point (ugro.records.controller_files.
ControllerHandle.spawn): it stays as it is across releases.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from ugro.controller.context import JobGone
from ugro.controller.loop import Controller
from ugro.core.errors import UgroError
from ugro.core.logs import attach_cluster_logs
from ugro.core.processes import take_lock
from ugro.records.controller_files import ControllerHandle

log = logging.getLogger("ugro.controller")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m ugro.controller EXPERIMENT_DIR", file=sys.stderr)
        return 2
    directory = Path(argv[0])
    handle = ControllerHandle(directory)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if take_lock(handle.lock_path) is None:
        log.info("another controller watches %s; leaving it to it", directory.name)
        return 0
    try:
        cluster = handle.cluster()
    except (KeyError, TypeError, ValueError):
        cluster = None
    if cluster is None:
        log.error("%s holds no cluster", handle.cluster_path)
        return 2
    # The jobs' lifecycle goes to logs/launcher.log too, as the launch's own lines do.
    attach_cluster_logs(cluster)
    try:
        Controller(cluster, directory.name, handle).run()
    except JobGone:
        log.info("%s: its experiment directory is gone; nothing left to watch", directory.name)
    except UgroError as exc:
        log.error("%s", exc.message)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
