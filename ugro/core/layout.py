"""The job layout, defined once: job names and ids, and what a job directory holds.

The roles receive these as variables from the inventory (`ugro_job_layout`, and each node's
`ugro_experiments_path`), so the pattern and the directory are never written out a second time.

A job directory, on every node, `<experiments>/<job_id>/`:

    code/                 what ran: ugro's scripts, the training defaults, the job's own script
    launch.sh, supervise.sh, pid, exit_code        the node's start-up and its outcome
    logs/<node>.rank<R>.{log,exit,progress}, logs/<node>.{agent,supervise}.log
    attempts/<n>/         an earlier attempt's pid, exit codes and progress (after a retry)
    ...                   whatever the ranks write to UGRO_OUTPUT_DIR

On the master it is the experiment directory itself, which also holds config.json, the job's
controller's files (controller/, ugro.records.controller_files) and, once collected, each
worker's logs (logs/) and outputs (nodes/<node>/).
"""

from __future__ import annotations

import re
from datetime import datetime

from ugro.core.errors import UsageError

# A name never starts with '-' (it would read as an option to torchrun, rsync or ssh) or '.'.
NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
STAMP = r"[0-9]{8}_[0-9]{6}"
JOB_ID = rf"(?P<name>{NAME})_(?P<stamp>{STAMP})"
# The same rule for Ansible's `match` test (anchored there by ^...$).
JOB_ID_PATTERN = f"^{NAME}_{STAMP}$"

CODE_DIR = "code"
# In code/: the node-side job control the job's controller runs over SSH (roles/ugro_job).
JOBCTL_FILE = "ugro_jobctl.py"
LOGS_DIR = "logs"
NODES_DIR = "nodes"  # on the master: what each worker's ranks wrote, collected
# What the ranks write beside metrics.jsonl: how they split each micro-step (balanced jobs).
PLAN_FILE = "balance.json"
# The job's machinery on each node (rsync patterns, from the job directory), never collected as
# the job's output; logs are collected on their own.
MACHINERY = (
    "launch.sh",
    "supervise.sh",
    "pid",
    "exit_code",
    ".secrets",
    "*.tmp",
    CODE_DIR,
    LOGS_DIR,
    "attempts",  # earlier attempts' pid, exit codes and progress (ugro_start.archive_attempt)
    "controller",  # on the master: the job's controller (ugro.records.controller_files)
)

_NAME = re.compile(NAME)
_JOB_ID = re.compile(JOB_ID)


def layout_vars() -> dict[str, object]:
    """The layout as the roles receive it (the inventory's `ugro_job_layout`)."""
    return {
        "id_pattern": JOB_ID_PATTERN,
        "code_dir": CODE_DIR,
        "logs_dir": LOGS_DIR,
        "nodes_dir": NODES_DIR,
        "machinery": list(MACHINERY),
    }


def check_name(name: str) -> str:
    """A job name: 1 to 64 of letters, digits, '_', '.', '-', starting with a letter or digit."""
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"job name {name!r} is not valid; expected 1 to 64 of letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return name


def check_job_ref(text: str) -> str:
    """What a command takes for a job: its id, or a name meaning its newest job."""
    return text if is_job_id(text) else check_name(text)


def is_job_id(text: str) -> bool:
    return _JOB_ID.fullmatch(text) is not None


def new_job_id(name: str, now: datetime | None = None) -> str:
    return f"{check_name(name)}_{(now or datetime.now()).strftime('%Y%m%d_%H%M%S')}"


def name_of(job_id: str) -> str:
    match = _JOB_ID.fullmatch(job_id)
    return match.group("name") if match else job_id
