"""A cache of resolved clusters, so that commands start fast while cluster.yaml is unchanged.

Loading cluster.yaml means importing pydantic and building the schema's models: about 0.3 s,
more than `ugro results` or `ugro logs` spend on everything else, paid again by the inventory
plugin in every Ansible run and by every launch before its first step. After each full load the
resolved Cluster is written to ~/.cache/ugro/resolved/ as it is (`Cluster.to_json`), keyed by
everything it depends on:

- the file: its resolved path and the SHA-256 of its content (not its mtime, which can miss an
  edit within the same tick), and the value of every ${VARIABLE} it names;
- the process: interpreter, home, UGRO_HOME and user (the built-in cluster and `~` use them);
- ugro itself: its version and the modules that validate and resolve (an edit changes the key).

A key that differs is a miss: the file is loaded and validated as always (so an invalid file
still fails with its FILE:LINE message) and the entry rewritten. An entry is used only if this
user owns it and nobody else can read or write it. A cache that cannot be read or written is
ignored; it is never a reason for a command to fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

from ugro import __version__
from ugro.config.load import load_cluster_file, local_cluster
from ugro.config.source import HOME_ENV, current_user, locate_config, referenced_variables
from ugro.core.cluster import Cluster

FORMAT = 3
CACHE_ENV = "UGRO_CACHE_DIR"
_PACKAGE = Path(__file__).resolve().parent.parent
# The modules whose code decides what a cluster.yaml resolves to.
_RESOLVING_MODULES = (
    "core/cluster.py",
    "config/cache.py",
    "config/load.py",
    "config/loader.py",
    "config/resolution.py",
    "config/schema.py",
    "config/source.py",
)
_MAX_CONFIG_BYTES = 1 << 20


def load_cluster(explicit: str | os.PathLike[str] | None = None) -> Cluster:
    """The cluster named by --config / UGRO_CONFIG / the search path, or the built-in one."""
    source = locate_config(explicit)
    # The key is taken before the file is read: an edit made while it loads gets a new key,
    # so the entry stored below can never stand for content it was not built from.
    key = cache_key(source)
    if key is not None:
        cached = _read(source, key)
        if cached is not None:
            return cached
    cluster = local_cluster() if source is None else load_cluster_file(source)
    if key is not None:
        _write(source, key, cluster)
    return cluster


def cache_key(source: Path | None) -> str | None:
    """Everything the resolved cluster depends on, hashed; None if the file cannot be read."""
    facts: dict[str, Any] = {
        "format": FORMAT,
        "ugro": [__version__, *_module_stamps()],
        "python": sys.executable,
        "home": str(Path.home()),
        "ugro_home": os.environ.get(HOME_ENV),
        "uid": os.geteuid(),
        "user": current_user(),
        "source": str(source) if source else None,
    }
    if source is not None:
        try:
            with open(source, "rb") as handle:
                content = handle.read(_MAX_CONFIG_BYTES + 1)
        except OSError:
            return None
        facts["sha256"] = hashlib.sha256(content).hexdigest()
        names = referenced_variables(content.decode("utf-8", "replace"))
        facts["variables"] = {name: os.environ.get(name) for name in names}
    encoded = json.dumps(facts, sort_keys=True).encode()
    return hashlib.sha256(encoded).hexdigest()


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ugro" / "resolved"


def entry_path(source: Path | None) -> Path:
    """One entry per cluster file (and per user's built-in cluster): an edit replaces it."""
    owner = "\0".join((str(source or "built-in"), sys.executable, str(Path.home())))
    return cache_dir() / f"{hashlib.sha256(owner.encode()).hexdigest()[:32]}.json"


def _module_stamps() -> list[str]:
    stamps = []
    for name in _RESOLVING_MODULES:
        try:
            info = (_PACKAGE / name).stat()
            stamps.append(f"{name}:{info.st_size}:{info.st_mtime_ns}")
        except OSError:
            stamps.append(f"{name}:missing")
    return stamps


def _read(source: Path | None, key: str) -> Cluster | None:
    try:
        fd = os.open(entry_path(source), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        # Someone else's file (or one others could have written) is not trusted: the entry
        # decides where ugro writes and which hosts it reaches.
        if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & 0o077:
            return None
        with os.fdopen(fd, encoding="utf-8") as handle:
            fd = -1
            entry = json.load(handle)
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        return Cluster.from_json(entry["cluster"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # torn or foreign: load the file instead
    finally:
        if fd >= 0:
            os.close(fd)


def _write(source: Path | None, key: str, cluster: Cluster) -> None:
    path = entry_path(source)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Atomic: readers in other processes (Ansible's inventory plugin) see old or new, whole.
        # mkstemp makes the file 0600.
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".entry-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"key": key, "cluster": cluster.to_json()}, handle)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    except (OSError, TypeError, ValueError):
        pass  # a read-only home, a full disk: the next command loads the file again
