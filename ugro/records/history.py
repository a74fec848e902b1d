"""Jobs on the master: experiment directories and the history of state changes.

Layout (the seed's; a job directory's contents are described in ugro.core.layout):

    data/experiments/<job_id>/{config.json, metrics.jsonl, logs/, checkpoints/, artifacts/, ...}
    data/job_history.jsonl       one line per state change, appended under a lock; each
                                 carries its attempt, and only ugro.records.states'
                                 transitions are written. Lines with "event" instead of
                                 "state" add facts (a node's leftovers cleaned, say) without
                                 changing the state.

A line is a `HistoryLine`; a job's lines folded together are its `JobRecord`: its latest state,
attempt and what the lines said (`detail`, as written, for `--json`), with typed views of the
keys other modules read (the failure, the reason, the sweep, the events).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ugro.core.cluster import Cluster
from ugro.core.errors import UsageError
from ugro.core.files import append_jsonl, read_json_dict, write_json_atomic
from ugro.core.layout import LOGS_DIR, check_name, name_of
from ugro.records.job_config import JobConfig
from ugro.records.states import ACTIVE_STATES, FINAL_STATES, STATES, WAITING_STATES, State, refusal

__all__ = ["ACTIVE_STATES", "FINAL_STATES", "Failure", "HistoryLine", "JobRecord", "Jobs", "State"]

log = logging.getLogger(__name__)

# What a line's own keys are; everything else on it is its detail.
_LINE_KEYS = ("job_id", "name", "state", "event", "at", "attempt")
# An attempt's outcome (and its Slurm job), dropped from a record when the next attempt begins.
_ATTEMPT_KEYS = (
    "failure", "reason", "ended_at", "pids", "teardown", "pending_cleanup", "slurm_job",
)  # fmt: skip


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Failure:
    """The problem a job's controller chose as an attempt's cause (ugro.controller.detect)."""

    node: str
    cause: str  # a detect.KINDS kind: killed, exit, unreachable, hang, ...
    reason: str
    rank: int | None = None
    exit_code: int | None = None
    tail: tuple[str, ...] = ()  # the last lines of that rank's (or agent's) log

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Failure:
        rank, code = data.get("rank"), data.get("exit_code")
        return cls(
            node=str(data.get("node") or "?"),
            cause=str(data.get("cause") or ""),
            reason=str(data.get("reason") or ""),
            rank=rank if isinstance(rank, int) else None,
            exit_code=code if isinstance(code, int) else None,
            tail=tuple(str(line) for line in data.get("tail") or ()),
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"node": self.node, "cause": self.cause, "reason": self.reason}
        if self.rank is not None:
            data["rank"] = self.rank
        if self.exit_code is not None:
            data["exit_code"] = self.exit_code
        if self.tail:
            data["tail"] = list(self.tail)
        return data

    @property
    def out_of_memory(self) -> bool:
        text = " ".join(self.tail) + " " + self.reason
        return "out of memory" in text.lower() or "OutOfMemoryError" in text


@dataclass(frozen=True)
class HistoryLine:
    """One line of data/job_history.jsonl: a state change of an attempt, or an event."""

    job_id: str
    name: str
    at: str
    attempt: int | None = None
    state: State | None = None
    event: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HistoryLine | None:
        """A line as any release wrote it; None for a line that is not one of ours."""
        job_id, state, event = data.get("job_id"), data.get("state"), data.get("event")
        if not isinstance(job_id, str) or (state is None and event is None):
            return None
        if state is not None and state not in STATES:
            return None
        attempt = data.get("attempt")
        return cls(
            job_id=job_id,
            name=str(data.get("name") or name_of(job_id)),
            at=str(data.get("at") or ""),
            attempt=attempt if isinstance(attempt, int) else None,
            state=state,
            event=str(event) if event is not None else None,
            detail={k: v for k, v in data.items() if k not in _LINE_KEYS},
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"job_id": self.job_id, "name": self.name, "at": self.at}
        if self.state is not None:
            data["state"] = self.state
        if self.event is not None:
            data["event"] = self.event
        if self.attempt is not None:
            data["attempt"] = self.attempt
        return data | dict(self.detail)

    @property
    def failure(self) -> Failure | None:
        found = self.detail.get("failure")
        return Failure.from_json(found) if isinstance(found, Mapping) else None


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

    # -- what other modules read of the detail ---------------------------------------------------
    @property
    def failure(self) -> Failure | None:
        found = self.detail.get("failure")
        return Failure.from_json(found) if isinstance(found, Mapping) else None

    @property
    def reason(self) -> str | None:
        reason = self.detail.get("reason")
        return str(reason) if reason else None

    @property
    def cause(self) -> str | None:
        """Why the attempt ended, in a line: its failure's reason, else the recorded reason."""
        failure = self.failure
        return (failure.reason if failure and failure.reason else None) or self.reason

    @property
    def last_step(self) -> int | None:
        step = self.detail.get("last_step")
        return step if isinstance(step, int) else None

    @property
    def sweep(self) -> Mapping[str, Any]:
        """{name, point, index} for a job of a sweep, else {}."""
        sweep = self.detail.get("sweep")
        return sweep if isinstance(sweep, Mapping) else {}

    @property
    def placement(self) -> Mapping[str, Any]:
        placement = self.detail.get("placement")
        return placement if isinstance(placement, Mapping) else {}

    @property
    def teardown(self) -> Mapping[str, Mapping[str, Any]]:
        teardown = self.detail.get("teardown")
        return teardown if isinstance(teardown, Mapping) else {}

    def events(self, kind: str | None = None) -> list[Mapping[str, Any]]:
        """The job's event lines (all, or one kind), oldest first."""
        return [
            e
            for e in self.detail.get("events") or []
            if isinstance(e, Mapping) and (kind is None or e.get("event") == kind)
        ]


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

    def write_config(self, config: JobConfig) -> None:
        write_json_atomic(self.experiment_dir(config.job_id) / "config.json", config.to_json())

    def config(self, job_id: str) -> JobConfig:
        """The job's config.json (empty defaults when it has none, or an unreadable one)."""
        return JobConfig.from_json(
            read_json_dict(self.experiment_dir(job_id) / "config.json"), job_id
        )

    def nodes(self, record: JobRecord) -> list[str]:
        """The nodes a job runs on (from its history, else its config.json)."""
        return record.detail.get("nodes") or list(self.config(record.job_id).nodes)

    # -- history -----------------------------------------------------------------------------
    def record(
        self, job_id: str, state: State, *, attempt: int | None = None, **detail: Any
    ) -> bool:
        """Write `state` for the job's attempt (its current one by default) if
        ugro.records.states allows it from what the history holds now; False (nothing
        written) if not, which is how a second writer learns that someone else ended the
        attempt first."""

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

    def history(self, job_id: str | None = None) -> list[HistoryLine]:
        """Every readable line (one job's only, when given); a torn or foreign line is
        skipped, never fatal."""
        lines = []
        try:
            with open(self.paths.job_history, encoding="utf-8") as handle:
                for text in handle:
                    try:
                        data = json.loads(text)
                    except ValueError:
                        continue
                    line = HistoryLine.from_json(data) if isinstance(data, dict) else None
                    if line is not None and job_id in (None, line.job_id):
                        lines.append(line)
        except FileNotFoundError:
            pass
        return lines

    def records(self) -> dict[str, JobRecord]:
        """The latest state of every job, newest job first."""
        latest: dict[str, JobRecord] = {}
        for line in self.history():
            first = latest.get(line.job_id)
            if line.state is None:
                if first is not None:  # an event: facts for the job's detail, its state unchanged
                    events = [*first.detail.get("events", []), line.to_json()]
                    latest[line.job_id] = replace(first, detail={**first.detail, "events": events})
                continue
            attempt = line.attempt or (first.attempt if first else 1)
            detail = dict(first.detail) if first else {}
            if first is not None and attempt != first.attempt:
                # A new attempt: the previous attempt's outcome is history, not this one's.
                for stale in _ATTEMPT_KEYS:
                    detail.pop(stale, None)
            detail.update(line.detail)
            if line.attempt is not None:
                detail["attempt"] = line.attempt
            latest[line.job_id] = JobRecord(
                job_id=line.job_id,
                name=line.name,
                state=line.state,
                created_at=first.created_at if first else line.at,
                updated_at=line.at,
                detail=detail,
                attempt=attempt,
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
