"""What shipping scripts/ to a node would change, and whether it may.

`ugro sync` replaces the contents of each node's scripts directory (rsync --delete), so that a
script removed from ugro is removed from the nodes too. Pointed at a directory that holds
someone else's files (a shared ~/bin, a user-set paths.scripts), that would delete them. So
before it ships, the sync role (roles/ugro_sync) previews the transfer (`rsync --dry-run -ii`,
every file itemized) and reads the manifest the last sync left on the node; a file that would be
deleted or overwritten and that no earlier sync put there is foreign, and the sync is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def scripts_preview(lines: Iterable[str], manifest: Iterable[str]) -> dict[str, Any]:
    """From `rsync --dry-run --delete -ii` output: what the sync ships and what it would destroy
    that it did not put there. Each line is 11 flag characters, a space, then the path."""
    ours = set(manifest)
    shipped: list[str] = []
    foreign: list[str] = []
    for line in lines:
        flags, path = line[:11], line[12:]
        itemized = flags.startswith("*deleting") or (flags[:1] in "<>ch." and flags[1:2] in "fdLDS")
        if not itemized or line[11:12] != " " or not path or path == "./":
            continue  # rsync's other words ("created directory ...")
        if flags.startswith("*deleting"):
            if path not in ours:
                foreign.append(path)
            continue
        shipped.append(path)
        replaces_a_file = flags[1] == "f" and flags[0] in "<>c" and "+" not in flags[2:]
        if replaces_a_file and path not in ours:
            foreign.append(path)  # an existing file, different from ours, that we never wrote
    return {"shipped": sorted(shipped), "foreign": sorted(foreign)}
