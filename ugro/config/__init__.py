"""cluster.yaml -> the resolved Cluster (ugro.cluster), by idea:

- `source`: which file (--config, UGRO_CONFIG, ./config, ~/.config, else the built-in cluster);
- `loader`: YAML with line numbers, ${VAR} expansion, one-line FILE:LINE errors;
- `schema`: the pydantic models that validate it, and the cross-field rules;
- `resolution`: validated schema -> Cluster (every default, path and interpreter);
- `cache`: resolved clusters by content, so unchanged files cost no pydantic.

Commands call `load_cluster`; nothing in this package module imports pydantic until a file
must really be loaded.
"""

from __future__ import annotations

from pathlib import Path

from ugro.cluster import Cluster
from ugro.config.cache import load_cluster

__all__ = ["load_cluster", "load_cluster_file", "local_cluster"]


def load_cluster_file(path: Path) -> Cluster:
    """Read, validate and resolve one cluster.yaml (no cache)."""
    from ugro.config.loader import read_config
    from ugro.config.resolution import build_cluster

    return build_cluster(read_config(path), source=path, base_dir=path.parent)


def local_cluster() -> Cluster:
    """The built-in local cluster: this machine alone, reached without SSH (no cache)."""
    from ugro.config.resolution import build_cluster, local_cluster_config
    from ugro.config.source import builtin_home

    return build_cluster(local_cluster_config(), source=None, base_dir=builtin_home())
