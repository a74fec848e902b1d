"""Jobs on the master: experiment directories and the history of state changes.

Layout (the seed's; a job directory's contents are described in ugro.joblayout):

    data/experiments/<job_id>/{config.json, metrics.jsonl, logs/, checkpoints/, artifacts/, ...}
    data/job_history.jsonl       one line per state change, appended under a lock; each
                                 carries its attempt, and only ugro.jobstates' transitions
                                 are written. Lines with "event" instead of "state" add facts
                                 (a node's leftovers cleaned, say) without changing the state.
"""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ugro.cluster import Cluster
from ugro.errors import UsageError
from ugro.joblayout import LOGS_DIR, check_name, name_of
from ugro.jobstates import ACTIVE_STATES, FINAL_STATES, WAITING_STATES, State, refusal
from ugro.state import append_jsonl, read_json, write_json_atomic

__all__ = ["ACTIVE_STATES", "FINAL_STATES", "JobRecord", "Jobs", "State"]

log = logging.getLogger(__name__)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class JobRecord:
    """What the history says of one job: its latest state and when things happened."""

    job_id: str
    name: str
    state: State
    created_at: str
    updated_at: str
    detail: dict[str, Any]
    attempt: int = 1

    @property
    def active(self) -> bool:
        """Starting or running on its nodes (a queued job is neither)."""
        return self.state in ACTIVE_STATES

    @property
    def queued(self) -> bool:
        return self.state in WAITING_STATES

    @property
    def ended(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def ended_at(self) -> str | None:
        """When the job ended (not when its end was written down); None until it has."""
        if not self.ended:
            return None
        return str(self.detail.get("ended_at") or self.updated_at)


class Jobs:
    """The master's record of jobs for one cluster (only its name and paths are used)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.paths = cluster.paths

    # -- directories -------------------------------------------------------------------------
    def experiment_dir(self, job_id: str) -> Path:
        return self.paths.experiments / job_id

    def create(self, job_id: str) -> Path:
        directory = self.experiment_dir(job_id)
        try:
            directory.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise UsageError(f"job {job_id} already exists; launch again in a second") from None
        for sub in (LOGS_DIR, "checkpoints", "artifacts"):
            (directory / sub).mkdir()
        return directory

    def write_config(self, job_id: str, config: dict[str, Any]) -> None:
        write_json_atomic(self.experiment_dir(job_id) / "config.json", config)

    def config(self, job_id: str) -> dict[str, Any]:
        return read_json(self.experiment_dir(job_id) / "config.json") or {}

    def nodes(self, record: JobRecord) -> list[str]:
        """The nodes a job runs on (from its history, else its config.json)."""
        return record.detail.get("nodes") or self.config(record.job_id).get("nodes") or []

    # -- history -----------------------------------------------------------------------------
    def record(
        self, job_id: str, state: State, *, attempt: int | None = None, **detail: Any
    ) -> bool:
        """Write `state` for the job's attempt (its current one by default) if ugro.jobstates
        allows it from what the history holds now; False (nothing written) if not, which is
        how a second writer learns that someone else ended the attempt first."""

        entry: dict[str, Any] = {
            "job_id": job_id,
            "name": name_of(job_id),
            "state": state,
            "at": now_iso(),
            **detail,
        }

        def check() -> str | None:
            current = self.records().get(job_id)
            entry["attempt"] = (
                attempt if attempt is not None else (current.attempt if current else 1)
            )
            return refusal(
                current.state if current else None,
                current.attempt if current else 0,
                state,
                entry["attempt"],
            )

        refused = append_jsonl(self.paths.job_history, entry, check=check)
        if refused:
            log.info("%s: not recording %s: %s", job_id, state, refused)
            return False
        return True

    def note(self, job_id: str, event: str, **detail: Any) -> None:
        """A fact about a job that changes no state (leftovers cleaned on a node, say)."""
        append_jsonl(
            self.paths.job_history,
            {"job_id": job_id, "name": name_of(job_id), "event": event, "at": now_iso(), **detail},
        )

    def history(self) -> list[dict[str, Any]]:
        """Every readable line; a torn or foreign line is skipped, never fatal."""
        entries = []
        try:
            with open(self.paths.job_history, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    if (
                        isinstance(entry, dict)
                        and "job_id" in entry
                        and ("state" in entry or "event" in entry)
                    ):
                        entries.append(entry)
        except FileNotFoundError:
            pass
        return entries

    def records(self) -> dict[str, JobRecord]:
        """The latest state of every job, newest job first."""
        latest: dict[str, JobRecord] = {}
        for entry in self.history():
            job_id = entry["job_id"]
            first = latest.get(job_id)
            if "state" not in entry:
                if first is not None:  # an event: facts for the job's detail, its state unchanged
                    events = [*first.detail.get("events", []), entry]
                    latest[job_id] = replace(first, detail={**first.detail, "events": events})
                continue
            attempt = entry.get("attempt", first.attempt if first else 1)
            detail = dict(first.detail) if first else {}
            if first is not None and attempt != first.attempt:
                # A new attempt: the previous attempt's outcome is history, not this one's.
                for stale in (
                    "failure",
                    "reason",
                    "ended_at",
                    "pids",
                    "teardown",
                    "pending_cleanup",
                ):
                    detail.pop(stale, None)
            detail.update(
                {k: v for k, v in entry.items() if k not in ("job_id", "name", "state", "at")}
            )
            latest[job_id] = JobRecord(
                job_id=job_id,
                name=entry.get("name", job_id),
                state=entry["state"],
                created_at=first.created_at if first else entry.get("at", ""),
                updated_at=entry.get("at", ""),
                detail=detail,
                attempt=int(attempt) if isinstance(attempt, int) else 1,
            )
        return dict(sorted(latest.items(), key=lambda kv: kv[1].created_at, reverse=True))

    def find(self, name_or_id: str) -> JobRecord:
        """A job id, or a name meaning its newest job."""
        records = self.records()
        if name_or_id in records:
            return records[name_or_id]
        check_name(name_or_id)
        matching = [r for r in records.values() if r.name == name_or_id]
        if not matching:
            raise UsageError(
                f"no job named {name_or_id!r} on {self.cluster.name}; "
                "`ugro status` lists the recent ones"
            )
        return max(matching, key=lambda r: r.job_id)


def git_commit(directory: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
