"""Where cluster.yaml is found, and where ugro keeps its own files: no pydantic, no YAML.

Kept apart from ugro.config so that commands which only read the master's files (`ugro logs`,
`ugro results`) can find them without importing the schema (see ugro.resolved).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ugro.errors import ConfigError

CONFIG_ENV = "UGRO_CONFIG"
HOME_ENV = "UGRO_HOME"
# ${NAME} in cluster.yaml: replaced by the environment variable when the file is loaded.
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class ClusterPaths:
    """Where ugro keeps its own files on the master (the seed's data/ and logs/ layout)."""

    project_root: Path
    data: Path
    logs: Path
    experiments: Path

    @property
    def cluster_state(self) -> Path:
        return self.data / "cluster_state.json"

    @property
    def job_history(self) -> Path:
        return self.data / "job_history.jsonl"

    @property
    def runs(self) -> Path:
        return self.data / "runs"


def config_search_path(cwd: Path | None = None) -> list[Path]:
    """Where a cluster.yaml is looked for when neither --config nor UGRO_CONFIG names one."""
    cwd = cwd or Path.cwd()
    return [cwd / "config" / "cluster.yaml", Path.home() / ".config" / "ugro" / "cluster.yaml"]


def locate_config(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """--config, then UGRO_CONFIG, then the search path; None means the built-in local cluster."""
    named = explicit or os.environ.get(CONFIG_ENV)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            origin = "--config" if explicit else CONFIG_ENV
            raise ConfigError(f"{path}: no such file (named by {origin}); expected a cluster.yaml")
        return path.resolve()
    for candidate in config_search_path():
        if candidate.is_file():
            return candidate.resolve()
    return None
