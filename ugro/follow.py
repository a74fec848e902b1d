"""Following a running job: the master's own files at once, the other nodes now and then.

One loop for `ugro launch` (metrics for the progress line) and `ugro logs --follow` (the ranks'
lines). Asking the nodes is an Ansible run, which on a small master competes with the job's own
ranks for the CPU (measured in bench/: a run every 5 s delayed the first step by seconds). So
the loop reads the master's experiment directory, where the master's ranks write, every half
second for free, and asks the nodes (one status run, which can bring their logs home too) only
when the master's agent has exited (a worker's failure ends it too, through the rendezvous) and
every `check_every` seconds as a fallback.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ugro.cluster import Cluster
from ugro.control import refresh
from ugro.jobs import JobRecord, Jobs

# Once the master's agent is done, the workers are finishing too: ask again this soon.
_AFTER_MASTER_ENDED_S = 3.0


class JsonLines:
    """New records of a JSON-lines file since the last call (a line being written waits)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def new_records(self) -> Iterator[dict[str, Any]]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
                self.offset = handle.tell()
        except FileNotFoundError:
            return
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


def follow(
    cluster: Cluster,
    job_id: str,
    *,
    on_metrics: Callable[[dict[str, Any]], None] | None = None,
    on_poll: Callable[[], None] | None = None,
    collect_logs: bool = False,
    check_every: float = 20.0,
    check_first: bool = False,
    poll: float = 0.5,
) -> JobRecord:
    """Watch a job until it reaches a final state; return its record then.

    on_metrics gets each new metrics record, on_poll is called after every look (to read the
    logs, say). With collect_logs each check also brings the other nodes' rank logs home;
    check_first asks the nodes at once instead of after check_every.
    """
    jobs = Jobs(cluster)
    directory = jobs.experiment_dir(job_id)
    metrics = JsonLines(directory / "metrics.jsonl")
    master_exit = directory / "exit_code"

    def emit() -> None:
        if on_metrics is not None:
            for entry in metrics.new_records():
                on_metrics(entry)
        if on_poll is not None:
            on_poll()

    record = jobs.find(job_id)
    asked_after_end = False
    next_check = time.monotonic() + (0.0 if check_first else check_every)
    while record.active:
        emit()
        ended_here = master_exit.exists()
        if time.monotonic() >= next_check or (ended_here and not asked_after_end):
            asked_after_end = ended_here
            record = refresh(cluster, record, collect_logs=collect_logs)
            next_check = time.monotonic() + (_AFTER_MASTER_ENDED_S if ended_here else check_every)
            continue
        time.sleep(poll)
    emit()
    return record
