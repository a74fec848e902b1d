"""Where the files ugro runs live: the repository checkout, or the copy inside an installed wheel.

The repository keeps the design card's layout (ansible.cfg, playbooks/, roles/, templates/,
scripts/ at the top); the wheel carries the same tree under ugro/_project (see pyproject.toml).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from ugro.core.errors import UgroError, UsageError

# The ugro package's directory (this module is ugro/nodes/assets.py).
PACKAGE_DIR = Path(__file__).resolve().parent.parent
INVENTORY_PLUGINS = PACKAGE_DIR / "ansible_plugins" / "inventory"
FILTER_PLUGINS = PACKAGE_DIR / "ansible_plugins" / "filter"


@cache
def project_dir() -> Path:
    for candidate in (PACKAGE_DIR / "_project", PACKAGE_DIR.parent):
        if (candidate / "playbooks").is_dir() and (candidate / "ansible.cfg").is_file():
            return candidate
    raise UgroError(f"ugro's playbooks are missing from {PACKAGE_DIR}; reinstall ugro")


def playbooks() -> list[str]:
    return sorted(p.stem for p in (project_dir() / "playbooks").glob("*.yml"))


def playbook_path(name: str) -> Path:
    """A playbook by name (`health`, `health.yml`) or, for the user's own, by path."""
    candidate = Path(name)
    if candidate.suffix in {".yml", ".yaml"} and candidate.is_file():
        return candidate.resolve()
    stem = name.removesuffix(".yml").removesuffix(".yaml")
    if stem in playbooks():
        return project_dir() / "playbooks" / f"{stem}.yml"
    known = ", ".join(playbooks())
    raise UsageError(f"no playbook {name!r}; expected one of: {known}, or a path to a .yml file")
