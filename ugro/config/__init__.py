"""cluster.yaml -> the resolved Cluster (ugro.core.cluster), by idea:

- `source`: which file (--config, UGRO_CONFIG, ./config, ~/.config, else the built-in cluster);
- `loader`: YAML with line numbers, ${VAR} expansion, one-line FILE:LINE errors;
- `schema`: the pydantic models that validate it, and the cross-field rules;
- `resolution`: validated schema -> Cluster (every default, path and interpreter);
- `load`: one file (or the built-in cluster) read, validated and resolved;
- `cache`: resolved clusters by content, so unchanged files cost no pydantic.

Commands call `load_cluster`; nothing in this package module imports pydantic until a file
must really be loaded.
"""

from __future__ import annotations

from ugro.config.cache import load_cluster
from ugro.config.load import load_cluster_file, local_cluster

__all__ = ["load_cluster", "load_cluster_file", "local_cluster"]
