"""Notifying a job's end once: when its controller is done with it (a retry is not an end).

The history is read from where the last look stopped (a byte cursor the daemon keeps in its
state.json), so a restarted daemon notifies what ended while it was away, and a first daemon
does not notify what ended before it existed. Losing the cursor only repeats a notification.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from ugro.core.cluster import Cluster
from ugro.daemon.notify import notify
from ugro.records.controller_files import ControllerHandle
from ugro.records.history import JobRecord, Jobs
from ugro.records.states import FINAL_STATES


class JobEndNotices:
    def __init__(self, cluster: Cluster, cursor: int | None, pending: Mapping[str, int]) -> None:
        self.cluster = cluster
        self.jobs = Jobs(cluster)
        self.cursor = restore_cursor(cursor, self.jobs.paths.job_history)
        self.pending: dict[str, int] = dict(pending)  # job id -> the attempt that ended

    def look(self, records: Mapping[str, JobRecord]) -> None:
        self._read_ends()
        for job_id, attempt in list(self.pending.items()):
            record = records.get(job_id)
            if record is None:
                del self.pending[job_id]
                continue
            if record.attempt != attempt and not record.ended:
                del self.pending[job_id]  # retried: the next attempt's end will tell
                continue
            if ControllerHandle(self.jobs.experiment_dir(job_id)).working():
                continue  # its controller may still retry it
            del self.pending[job_id]
            failure = record.failure
            notify(
                self.cluster,
                "job_ended",
                job_id=job_id,
                job_name=record.name,
                job_state=record.state,
                attempt=record.attempt,
                node=failure.node if failure else None,
                reason=record.cause or record.state,
            )

    def _read_ends(self) -> None:
        try:
            with open(self.jobs.paths.job_history, "rb") as handle:
                handle.seek(self.cursor)
                new = handle.read()
        except FileNotFoundError:
            new = b""
        complete = new[: new.rfind(b"\n") + 1]
        self.cursor += len(complete)
        for line in complete.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("state") in FINAL_STATES:
                self.pending[str(entry["job_id"])] = int(entry.get("attempt") or 1)


def restore_cursor(cursor: int | None, history: Path) -> int:
    """Where the last daemon stopped reading the history; a first daemon starts at its end
    (jobs that ended before it are not news)."""
    size = history.stat().st_size if history.exists() else 0
    if cursor is not None and 0 <= cursor <= size:
        return cursor
    return size
