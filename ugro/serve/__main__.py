"""python -m ugro.serve DEPLOYMENT_DIR: a deployment's controller process.

`ugro serve up` starts it, and `ugro serve status` or the daemon start it again when it died
(ugro.records.deployments.DeploymentFiles.spawn names this entry point).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from ugro.core.errors import UgroError
from ugro.core.processes import take_lock
from ugro.records.deployments import DeploymentFiles
from ugro.serve.controller import DeploymentController

log = logging.getLogger("ugro.serve")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m ugro.serve DEPLOYMENT_DIR", file=sys.stderr)
        return 2
    files = DeploymentFiles(Path(argv[0]))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if take_lock(files.lock_path) is None:
        log.info("another controller watches %s; leaving it to it", files.name)
        return 0
    cluster = files.cluster()
    if cluster is None or not files.exists():
        log.error("%s holds no deployment or no cluster", files.dir)
        return 2
    try:
        DeploymentController(cluster, files).run()
    except UgroError as exc:
        log.error("%s", exc.message)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
