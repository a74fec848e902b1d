"""python -m ugro.daemon [--config PATH]: the daemon, in the foreground.

`ugro daemon start` runs this detached, and installed systemd units name it in ExecStart: it
stays as it is across releases.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ugro.config import load_cluster
from ugro.core.errors import UgroError
from ugro.daemon.loop import Daemon

log = logging.getLogger("ugro.daemon")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ugro.daemon")
    parser.add_argument("--config")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        cluster = load_cluster(args.config)
        Daemon(cluster, args.config).run()
    except UgroError as exc:
        log.error("%s", exc.message)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
