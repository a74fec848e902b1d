"""Job states: the transition table, the history that enforces it, one final state per attempt."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from ugro.config import load_cluster_file
from ugro.records.history import Jobs
from ugro.records.states import ACTIVE_STATES, FINAL_STATES, STATES, TRANSITIONS, refusal
from ugro.results.summary import job_results


def test_the_table_covers_every_state_and_finals_lead_nowhere() -> None:
    assert set(TRANSITIONS) == {None, *STATES}
    for state in FINAL_STATES:
        assert TRANSITIONS[state] == frozenset()
    for state in ACTIVE_STATES:
        assert set(FINAL_STATES) - {"succeeded"} <= TRANSITIONS[state]
    assert "succeeded" in TRANSITIONS["running"] and "succeeded" not in TRANSITIONS["launching"]


@pytest.mark.parametrize(
    ("current", "attempt", "new", "new_attempt", "allowed"),
    [
        (None, 0, "launching", 1, True),
        (None, 0, "running", 1, False),
        ("launching", 1, "running", 1, True),
        ("running", 1, "launching", 1, False),
        ("running", 1, "failed", 1, True),
        ("failed", 1, "stopped", 1, False),  # a second final state for the same attempt
        ("failed", 1, "launching", 2, True),  # a retry
        ("succeeded", 1, "launching", 2, True),  # --resume
        ("running", 1, "launching", 2, False),  # attempt 1 has not ended
        ("failed", 1, "launching", 3, False),  # attempts do not skip
        ("lost", 2, "running", 2, False),
        (None, 0, "queued", 1, True),  # ugro submit
        ("queued", 1, "launching", 1, True),  # the daemon gave it its nodes
        ("queued", 1, "stopped", 1, True),  # cancelled before it started
        ("queued", 1, "running", 1, False),
        ("queued", 1, "failed", 1, True),  # Slurm ended it in its queue
        ("failed", 1, "queued", 2, True),  # a retry waits in Slurm's queue
        ("running", 1, "queued", 2, False),
        ("stopped", 1, "launching", 1, False),  # a cancel recorded first wins
        ("launching", 1, "queued", 1, False),
    ],
)
def test_refusal_follows_the_table(current, attempt, new, new_attempt, allowed) -> None:
    assert (refusal(current, attempt, new, new_attempt) is None) is allowed


def test_the_history_writes_only_allowed_transitions(cluster) -> None:
    jobs = Jobs(cluster)
    job_id = "exp1_20260101_000000"
    jobs.create(job_id)
    assert not jobs.record(job_id, "running")  # a job begins at launching
    assert jobs.record(job_id, "launching", nodes=["m"])
    assert jobs.record(job_id, "running")
    assert jobs.record(job_id, "failed", failure={"node": "m", "reason": "boom"})
    assert not jobs.record(job_id, "stopped")  # attempt 1 already ended
    assert [e.state for e in jobs.history()] == ["launching", "running", "failed"]
    record = jobs.find(job_id)
    assert (record.state, record.attempt, record.detail["failure"]["reason"]) == (
        "failed",
        1,
        "boom",
    )

    assert jobs.record(job_id, "launching", attempt=2)
    record = jobs.find(job_id)
    # The new attempt keeps the job's facts but not the previous attempt's outcome.
    assert record.attempt == 2 and record.active and "failure" not in record.detail
    assert record.detail["nodes"] == ["m"]
    jobs.note(job_id, "leftovers_cleaned", node="m")
    assert jobs.find(job_id).state == "launching"  # an event changes no state
    assert jobs.find(job_id).detail["events"][0]["node"] == "m"


def test_duration_ends_when_the_job_ended_not_when_it_was_written(cluster) -> None:
    jobs = Jobs(cluster)
    job_id = "exp2_20260101_000000"
    jobs.create(job_id)
    jobs.record(job_id, "launching")
    jobs.record(job_id, "running")
    record = jobs.find(job_id)
    ended = record.created_at.replace("+00:00", "")  # the same second it started
    jobs.record(job_id, "failed", ended_at=ended + "+00:00")
    summary = job_results(jobs, jobs.find(job_id))
    assert summary["duration_s"] == 0.0


def _race(args: tuple[str, str]) -> None:
    project, state = args
    jobs = Jobs(load_cluster_file(Path(project) / "cluster.yaml"))
    jobs.record("race_20260101_000000", state)  # type: ignore[arg-type]


def test_racing_writers_give_an_attempt_exactly_one_final_state(cluster) -> None:
    jobs = Jobs(cluster)
    jobs.create("race_20260101_000000")
    jobs.record("race_20260101_000000", "launching")
    jobs.record("race_20260101_000000", "running")
    racers = [(str(cluster.source.parent), s) for s in ("failed", "stopped", "lost") * 4]
    with multiprocessing.get_context("spawn").Pool(6) as pool:
        pool.map(_race, racers)
    finals = [e.state for e in jobs.history() if e.state in FINAL_STATES]
    assert len(finals) == 1
