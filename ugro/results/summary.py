"""A job's results: the figures `ugro results` prints, and summary.json, the same figures
written into the experiment directory once the job has ended (so that tools and the dashboard
read one small file instead of the curves).

Steps are the last step any record names (a run logging every 10 steps that ends at 492 ran
492 steps, not 490); tokens/s is every rank's counted tokens over the training time
(ugro.metrics.tokens_per_s), not a mean of interval rates.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ugro.core.files import read_json_dict, write_json_atomic
from ugro.core.layout import NODES_DIR, PLAN_FILE
from ugro.records.history import JobRecord, Jobs
from ugro.records.job_status import job_status
from ugro.results.metrics import load_curves, rank_totals, stragglers, tokens_per_s

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"


def sweep_records(jobs: Jobs, name: str) -> list[JobRecord]:
    """The jobs of the sweep called `name`, in sweep order; none when `name` names a job."""
    records = jobs.records()
    if name in records or any(r.name == name for r in records.values()):
        return []
    return sorted(
        (r for r in records.values() if (r.detail.get("sweep") or {}).get("name") == name),
        key=lambda r: (r.created_at, (r.detail.get("sweep") or {}).get("index", 0)),
    )


def find_jobs(jobs: Jobs, names: list[str]) -> list[JobRecord]:
    """Jobs by name or id, a sweep's name standing for all its jobs; each job once."""
    found: dict[str, JobRecord] = {}
    for name in names:
        for record in sweep_records(jobs, name) or [jobs.find(name)]:
            found.setdefault(record.job_id, record)
    return list(found.values())


def job_results(jobs: Jobs, record: JobRecord) -> dict[str, Any]:
    """The job's summary.json when it was written for this state and attempt, else the
    figures computed now from what the job has written so far."""
    directory = jobs.experiment_dir(record.job_id)
    going = job_status(jobs, record).to_json()  # read now: never what summary.json kept
    if record.ended:
        stored = read_json_dict(directory / SUMMARY_FILE)
        if stored.get("status") == record.state and stored.get("attempt") == record.attempt:
            return stored | {"experiment_dir": str(directory), "detail": record.detail} | going
    return compute_results(directory, record) | going


def write_summary(jobs: Jobs, record: JobRecord) -> dict[str, Any]:
    """Compute the ended job's figures and keep them in summary.json."""
    directory = jobs.experiment_dir(record.job_id)
    results = compute_results(directory, record)
    write_json_atomic(directory / SUMMARY_FILE, results)
    return results


def compute_results(directory: Path, record: JobRecord) -> dict[str, Any]:
    curves = load_curves(directory)
    train, evals = curves.train, curves.evals
    started = _parse(record.created_at)
    ended = _parse(record.ended_at) if record.ended_at else datetime.now(timezone.utc)
    counted = [r for r in train if r.get("train_s")]
    ranks = rank_totals(train)
    return {
        "job_id": record.job_id,
        "name": record.name,
        "status": record.state,
        "attempt": record.attempt,
        "duration_s": round((ended - started).total_seconds(), 1) if started and ended else None,
        "train_s": round(sum(float(r["train_s"]) for r in counted), 1) if counted else None,
        "steps": curves.last_step,
        "final_loss": train[-1]["loss"] if train else None,
        "best_loss": min(m["loss"] for m in train) if train else None,
        "final_eval_loss": evals[-1]["eval_loss"] if evals else None,
        "best_eval_loss": min(m["eval_loss"] for m in evals) if evals else None,
        "tokens": sum(int(r["tokens"]) for r in counted if r.get("tokens")) if counted else None,
        "tokens_per_s": tokens_per_s(train),
        "metrics_source": curves.source,
        "ranks": ranks,
        "stragglers": stragglers(ranks),
        # How the ranks split each micro-step (balance.json: auto or manual), else {}.
        "balance": read_json_dict(directory / PLAN_FILE),
        "checkpoints": _checkpoints(directory),
        "artifacts": sorted(
            str(p.relative_to(directory / "artifacts")) for p in (directory / "artifacts").glob("*")
        ),
        "node_outputs": sorted(
            str(p.relative_to(directory / NODES_DIR)) for p in (directory / NODES_DIR).glob("*/*")
        ),
        "experiment_dir": str(directory),
        "detail": record.detail,
    }


def _checkpoints(directory: Path) -> list[str]:
    return sorted(
        (p.name for p in (directory / "checkpoints").glob("checkpoint-*") if p.is_dir()),
        key=lambda n: int(n.split("-")[-1]) if n.split("-")[-1].isdigit() else -1,
    )


def _parse(stamp: str) -> datetime | None:
    try:
        return datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return None
