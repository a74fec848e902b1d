"""The sandbox nodes' Python environment: a venv that every node user can run.

Root's pyenv lives under /root (mode 0700), out of the node users' reach, so the nodes run a venv
built from the distribution's /usr/bin/python3 in a world-readable place. On a real cluster this
is each node's pixi environment (`environment.manager: pixi`); the sandbox's cluster.yaml says
`manager: venv` and points every node at this one shared, read-only environment.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from filelock import FileLock

from ugro.core.errors import PrerequisiteError
from ugro.sandbox.system import run

log = logging.getLogger(__name__)

BASE_PYTHON = Path("/usr/bin/python3")
MARKER = ".ugro-sandbox-env.json"


# What training and serving need (scripts/requirements.txt), so that `ugro sync` finds it all
# in place.
TRAINING_PACKAGES = (
    "torch",
    "numpy",
    "transformers",
    "peft",
    "accelerate",
    "pyyaml",
    "tensorboard",
    "psutil",
    "nvidia-ml-py",
    # `ugro serve`: UGRO's own inference server.
    "starlette",
    "uvicorn",
)


def default_packages() -> list[str]:
    """The training packages at the versions this machine has, so the nodes match the master.

    torch above all: pinned, pip takes it from the same wheel source; an unpinned `torch` would
    fetch a multi-GB CUDA build from the index.
    """
    packages = []
    for name in TRAINING_PACKAGES:
        try:
            version = metadata.version(name).split("+", 1)[0]
        except metadata.PackageNotFoundError:
            packages.append(name)
        else:
            packages.append(f"{name}=={version}")
    return packages


def ensure_env(
    env_dir: Path,
    packages: list[str],
    *,
    wheelhouse: str | None = None,
    echo: Callable[[str], None] = print,
) -> Path:
    """Build (once) and return the interpreter of the nodes' environment."""
    python = env_dir / "bin" / "python"
    wanted = {"packages": sorted(packages), "base": str(BASE_PYTHON)}
    marker = env_dir / MARKER
    if _marker(marker) == wanted and python.exists():
        return python
    if not BASE_PYTHON.exists():
        raise PrerequisiteError(
            f"{BASE_PYTHON} is missing: the sandbox nodes need the distribution's Python "
            "(apt-get install python3 python3-venv)"
        )
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(env_dir.parent, 0o755)  # noqa: S103 - node users must reach the environment
    with FileLock(str(env_dir) + ".lock", timeout=1800):
        if _marker(marker) == wanted and python.exists():
            return python
        echo(f"Building the nodes' Python environment in {env_dir} ({', '.join(packages)}) ...")
        if not python.exists():
            run([str(BASE_PYTHON), "-m", "venv", str(env_dir)], timeout=300)
        command = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        if wheelhouse:
            command += ["--find-links", wheelhouse]
        run([*command, *packages], timeout=1800)
        for root, dirs, files in os.walk(env_dir):
            for name in dirs + files:
                path = Path(root) / name
                if not path.is_symlink():
                    mode = path.stat().st_mode
                    path.chmod(mode | 0o444 | (0o111 if mode & 0o100 else 0))
        marker.write_text(json.dumps(wanted), encoding="utf-8")
    return python


def _marker(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None
