"""Which cluster.yaml a command uses, and what outside the file its meaning depends on.

No pydantic and no YAML here: the cache keys an entry by these facts before deciding whether
the file needs loading at all.
"""

from __future__ import annotations

import getpass
import os
import re
from pathlib import Path

from ugro.core.errors import ConfigError

CONFIG_ENV = "UGRO_CONFIG"
HOME_ENV = "UGRO_HOME"
# ${NAME} in cluster.yaml: replaced by the environment variable when the file is loaded.
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


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


def builtin_home() -> Path:
    """Where the built-in local cluster keeps its data: $UGRO_HOME, else ~/.local/share/ugro."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".local" / "share" / "ugro")


def current_user() -> str:
    """The login name, also where $USER is unset (cron, CI, `sudo -i`)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "root" if os.geteuid() == 0 else "ugro"


def referenced_variables(text: str) -> list[str]:
    return sorted(set(ENV_REFERENCE.findall(text)))
