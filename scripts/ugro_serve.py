#!/usr/bin/env python3
"""UGRO's own inference server: `python ugro_serve.py --spec spec.json`.

Serves the base model and the adapters a deployment's spec.json names behind an OpenAI-shaped
API (servelib). Run by the node's training interpreter, from the deployment's code/ directory on
the node, detached and tagged by servectl; `ugro serve up` writes the spec and starts it.
Listening beyond loopback needs a key file (the spec's key_file): the key is read from the file,
never from the command line or the environment.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servelib.spec import SpecError, load_spec

log = logging.getLogger("ugro_serve")


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--spec", required=True, type=Path, help="the deployment's spec.json")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        spec = load_spec(args.spec)
    except SpecError as exc:
        print(f"ugro_serve: {exc}", file=sys.stderr)
        return 2
    key = None
    if spec.key_file:
        try:
            key = Path(spec.key_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            print(f"ugro_serve: key file {spec.key_file}: {exc.strerror}", file=sys.stderr)
            return 2
    if not key and not loopback(spec.host):
        print(f"ugro_serve: {spec.host} is not loopback: a key file is required", file=sys.stderr)
        return 2

    import uvicorn
    from servelib.app import Server, create_app

    app = create_app(Server(spec, key or None))
    uvicorn.run(app, host=spec.host, port=spec.port, log_level="info", timeout_graceful_shutdown=3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
