"""One job user: Slurm runs a job as one UID on every node it spans.

The guide's cluster logs in as a different user on each node (ob, ollie); Slurm cannot. UGRO
does not invent an account: `ugro slurm up` reads the job user's passwd entry on every node and
refuses, naming each node where it is missing or has another UID, with the command that fixes it.
"""

from __future__ import annotations

from collections.abc import Mapping


def passwd_uid(entry: str | None) -> int | None:
    """The UID in a `getent passwd` line (None: no such user)."""
    fields = (entry or "").strip().split(":")
    return int(fields[2]) if len(fields) >= 7 and fields[2].isdigit() else None


def uid_problems(user: str, entries: Mapping[str, str | None], reference: str) -> list[str]:
    """One line per node whose `user` is missing or has another UID than on `reference` (the
    master). `entries`: each node's `getent passwd USER` line, None where there is none."""
    expected = passwd_uid(entries.get(reference))
    if expected is None:
        return [
            f"{reference}: no user {user!r}, whom Slurm would run jobs as; create it, or set "
            "slurm.job_user in cluster.yaml to an account every node has"
        ]
    problems = []
    for node, entry in entries.items():
        uid = passwd_uid(entry)
        if uid is None:
            problems.append(
                f"{node}: no user {user!r} (UID {expected} on {reference}); Slurm runs a job as "
                f"one UID on every node: create it there with `useradd --uid {expected} {user}`"
            )
        elif uid != expected:
            problems.append(
                f"{node}: user {user!r} has UID {uid}, but {expected} on {reference}; Slurm runs "
                f"a job as one UID on every node: `usermod --uid {expected} {user}` there"
            )
    return problems
