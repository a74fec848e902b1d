"""Reading one cluster.yaml, or the built-in local cluster, into a Cluster: no cache.

The loader and the resolution are imported when a file must really be loaded: they bring
pydantic (about 0.3 s), which a command whose cluster is cached never pays.
"""

from __future__ import annotations

from pathlib import Path

from ugro.core.cluster import Cluster


def load_cluster_file(path: Path) -> Cluster:
    """Read, validate and resolve one cluster.yaml (no cache)."""
    # pydantic's models, for an uncached file only (see the module's docstring).
    from ugro.config.loader import read_config
    from ugro.config.resolution import build_cluster

    return build_cluster(read_config(path), source=path, base_dir=path.parent)


def local_cluster() -> Cluster:
    """The built-in local cluster: this machine alone, reached without SSH (no cache)."""
    # pydantic's models, for an uncached cluster only (see the module's docstring).
    from ugro.config.resolution import build_cluster, local_cluster_config
    from ugro.config.source import builtin_home

    return build_cluster(local_cluster_config(), source=None, base_dir=builtin_home())
