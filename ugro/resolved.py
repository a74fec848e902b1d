"""A cache of resolved clusters, so that commands start fast while cluster.yaml is unchanged.

Loading cluster.yaml means importing pydantic and building the schema's models: about 0.3 s,
more than `ugro results` or `ugro logs` spend on everything else, paid again by the inventory
plugin in every Ansible run and, before its first training step, by every launch. After each
full load, what those need (the cluster's name, ugro's directories, the inventory, and what a
launch takes from the file) is written to ~/.cache/ugro/resolved/, keyed by everything the
result depends on:

- the file: its resolved path and the SHA-256 of its content (not its mtime, which can miss an
  edit within the same tick), and the value of every ${VARIABLE} it names;
- the process: interpreter, home, UGRO_HOME and user (the built-in cluster and `~` use them);
- ugro itself: its version and the modules that validate and resolve (an edit changes the key).

A key that differs is a miss: the file is loaded and validated as always (so an invalid file
still fails with its FILE:LINE message) and the entry rewritten. A cache that cannot be read
or written is ignored; it is never a reason for a command to fail.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ugro import __version__
from ugro.errors import unknown_node
from ugro.paths import ENV_REFERENCE, HOME_ENV, ClusterPaths, locate_config

if TYPE_CHECKING:
    from ugro.config import Cluster

FORMAT = 2
CACHE_ENV = "UGRO_CACHE_DIR"
# The modules whose code decides what a cluster.yaml resolves to.
_RESOLVING_MODULES = ("config.py", "inventory.py", "paths.py", "resolved.py")
_MAX_CONFIG_BYTES = 1 << 20
_PATH_FIELDS = ("project_root", "data", "logs", "experiments")  # ClusterPaths, as stored


@dataclass(frozen=True)
class ResolvedCluster:
    """What commands and the inventory plugin need of a cluster, without the schema's models."""

    name: str
    source: Path | None
    paths: ClusterPaths
    # (name, group, host variables) per node, in rank order: the inventory plugin's input.
    hosts: tuple[tuple[str, str, dict[str, Any]], ...]
    # What a launch takes from the file: the validated document (for the job's config.json),
    # the training options it sets (Cluster.training_options) and torchrun's --max-restarts.
    document: dict[str, Any]
    training_options: tuple[tuple[str, Any], ...]
    max_restarts: int

    def describe(self) -> str:
        return str(self.source) if self.source else "the built-in local cluster"

    @property
    def node_names(self) -> list[str]:
        return [name for name, _, _ in self.hosts]

    @property
    def master_name(self) -> str:
        return self.hosts[0][0]

    def project_path(self, name: str) -> str:
        """The node's project directory, on the node."""
        return str(self._variables(name)["ugro_project_path"])

    def check_node(self, name: str) -> str:
        if name not in self.node_names:
            raise unknown_node(self.describe(), name, self.node_names)
        return name

    def rank(self, name: str) -> int:
        return int(self._variables(name)["ugro_rank"])

    def expected_versions(self) -> dict[str, str]:
        """The versions cluster.yaml declares (the same on every node)."""
        return dict(self.hosts[0][2].get("ugro_env_expected") or {}) if self.hosts else {}

    def inventory(self) -> dict[str, Any]:
        from ugro.inventory import inventory_from_hosts

        return inventory_from_hosts(self.hosts)

    def _variables(self, name: str) -> dict[str, Any]:
        for host, _, variables in self.hosts:
            if host == name:
                return variables
        raise unknown_node(self.describe(), name, self.node_names)


def load(explicit: str | os.PathLike[str] | None = None) -> ResolvedCluster:
    """The cluster as ugro.config.load_cluster would resolve it, from the cache when it can."""
    source = locate_config(explicit)
    key = cache_key(source)
    if key is not None:
        cached = _read(source, key)
        if cached is not None:
            return cached
    return _load_and_store(source, key)[1]


def load_full(explicit: str | os.PathLike[str] | None = None) -> tuple[Cluster, ResolvedCluster]:
    """The fully validated Cluster, its resolved form stored for later readers on the way."""
    source = locate_config(explicit)
    return _load_and_store(source, cache_key(source))


def _load_and_store(source: Path | None, key: str | None) -> tuple[Cluster, ResolvedCluster]:
    # The key is taken before the file is read: an edit made while it loads gets a new key,
    # so the entry stored here can never stand for content it was not built from.
    from ugro.config import load_cluster_file, local_cluster

    cluster = local_cluster() if source is None else load_cluster_file(source)
    resolved = from_cluster(cluster)
    if key is not None:
        _write(source, key, resolved)
    return cluster, resolved


def from_cluster(cluster: Cluster) -> ResolvedCluster:
    from ugro.inventory import host_vars

    return ResolvedCluster(
        name=cluster.name,
        source=cluster.source,
        paths=cluster.paths,
        hosts=tuple(
            (node.name, "master" if node.role == "master" else "workers", host_vars(cluster, node))
            for node in cluster.nodes
        ),
        document=cluster.config.model_dump(mode="json"),
        training_options=cluster.training_options(),
        max_restarts=cluster.config.cluster.communication.max_restarts,
    )


def cache_key(source: Path | None) -> str | None:
    """Everything the resolved cluster depends on, hashed; None if the file cannot be read."""
    facts: dict[str, Any] = {
        "format": FORMAT,
        "ugro": [__version__, *_module_stamps()],
        "python": sys.executable,
        "home": str(Path.home()),
        "ugro_home": os.environ.get(HOME_ENV),
        "uid": os.geteuid(),
        "user": _user(),
        "source": str(source) if source else None,
    }
    if source is not None:
        try:
            with open(source, "rb") as handle:
                content = handle.read(_MAX_CONFIG_BYTES + 1)
        except OSError:
            return None
        facts["sha256"] = hashlib.sha256(content).hexdigest()
        text = content.decode("utf-8", "replace")
        names = sorted(set(ENV_REFERENCE.findall(text)))
        facts["variables"] = {name: os.environ.get(name) for name in names}
    encoded = json.dumps(facts, sort_keys=True).encode()
    return hashlib.sha256(encoded).hexdigest()


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ugro" / "resolved"


def _entry_path(source: Path | None) -> Path:
    """One entry per cluster file (and per user's built-in cluster): an edit replaces it."""
    owner = "\0".join((str(source or "built-in"), sys.executable, str(Path.home())))
    return cache_dir() / f"{hashlib.sha256(owner.encode()).hexdigest()[:32]}.json"


def _module_stamps() -> list[str]:
    here = Path(__file__).parent
    stamps = []
    for name in _RESOLVING_MODULES:
        try:
            stat = (here / name).stat()
            stamps.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
        except OSError:
            stamps.append(f"{name}:missing")
    return stamps


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def _read(source: Path | None, key: str) -> ResolvedCluster | None:
    try:
        with open(_entry_path(source), encoding="utf-8") as handle:
            entry = json.load(handle)
        if entry.get("key") != key:
            return None
        paths = entry["paths"]
        return ResolvedCluster(
            name=entry["name"],
            source=Path(entry["source"]) if entry["source"] else None,
            paths=ClusterPaths(**{field: Path(paths[field]) for field in _PATH_FIELDS}),
            hosts=tuple(
                (name, group, dict(variables)) for name, group, variables in entry["hosts"]
            ),
            document=dict(entry["document"]),
            training_options=tuple((flag, value) for flag, value in entry["training_options"]),
            max_restarts=int(entry["max_restarts"]),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing, torn or foreign: load the file instead


def _write(source: Path | None, key: str, resolved: ResolvedCluster) -> None:
    entry = {
        "key": key,
        "name": resolved.name,
        "source": str(resolved.source) if resolved.source else None,
        "paths": {field: str(getattr(resolved.paths, field)) for field in _PATH_FIELDS},
        "hosts": [list(host) for host in resolved.hosts],
        "document": resolved.document,
        "training_options": [list(option) for option in resolved.training_options],
        "max_restarts": resolved.max_restarts,
    }
    path = _entry_path(source)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Atomic: readers in other processes (Ansible's inventory plugin) see old or new, whole.
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".entry-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(entry, handle)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    except (OSError, TypeError, ValueError):
        pass  # a read-only home, a full disk: the next command loads the file again
