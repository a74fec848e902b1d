"""Files the release before the restructure wrote (tests/fixtures/records/, made by its `ugro
launch` with a retry, `ugro submit --sweep` and its daemon) load into today's typed records,
and what they say survives a round trip."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from tests.conftest import REPO
from ugro.records.controller_files import ControllerOptions, ControllerState
from ugro.records.daemon_files import DaemonState
from ugro.records.history import HistoryLine, Jobs
from ugro.records.job_config import JobConfig

FIXTURES = REPO / "tests" / "fixtures" / "records"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def test_history_lines_of_the_last_release_fold_into_records(cluster) -> None:
    cluster.paths.data.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / "job_history.jsonl", cluster.paths.job_history)
    jobs = Jobs(cluster)
    lines = jobs.history()
    raw = [json.loads(t) for t in (FIXTURES / "job_history.jsonl").read_text().splitlines()]
    assert len(lines) == len(raw)
    assert [line.to_json() for line in lines] == raw  # nothing lost, nothing added
    records = jobs.records()
    launched = next(r for r in records.values() if r.name == "fixture")
    # Two attempts, each failed after its steps; the second not retried.
    assert (launched.state, launched.attempt) == ("failed", 2)
    assert launched.failure is not None and launched.failure.cause == "exit"
    assert launched.failure.exit_code == 1 and launched.last_step == 2
    assert [e["reason"] for e in launched.events("not_retried")] == ["no retries left (1 allowed)"]
    queued = [r for r in records.values() if r.name.startswith("queued")]
    assert len(queued) == 2 and all(r.queued for r in queued)
    assert {r.sweep["point"]["lr"] for r in queued} == {"1e-4", "2e-4"}
    assert all(r.placement["count"] == 1 for r in queued)


def test_a_foreign_line_is_no_line() -> None:
    assert HistoryLine.from_json({"job_id": "x_20260101_000000", "state": "exploded"}) is None
    assert HistoryLine.from_json({"state": "failed"}) is None


def test_config_json_of_a_launched_and_a_queued_job() -> None:
    for name in ("launched_config.json", "queued_config.json"):
        data = fixture(name)
        config = JobConfig.from_json(data)
        assert config.to_json() == data, name
    launched = JobConfig.from_json(fixture("launched_config.json"))
    assert launched.nodes == ("local",) and launched.script.endswith("failing.py")
    assert launched.ranks_per_node == {"local": 1} and launched.rendezvous_port
    assert "torch.distributed.run" in launched.commands["local"]
    assert launched.attempts["2"]["nodes"] == ["local"]
    queued = JobConfig.from_json(fixture("queued_config.json"))
    assert queued.placement == {"nodes": [], "count": 1, "min_vram_gb": None}
    assert queued.sweep is not None and queued.sweep["name"] == "queued"
    # A key a later release (or a user) added is kept.
    assert JobConfig.from_json({**fixture("queued_config.json"), "new": 1}).to_json()["new"] == 1


def test_the_controllers_files() -> None:
    options = ControllerOptions.from_json(fixture("controller_options.json"))
    assert options.retries == 1 and options.hang_timeout == 30
    assert options.request["script"].endswith("failing.py")
    assert options.to_json() == fixture("controller_options.json")
    state = ControllerState.from_json(fixture("controller_state.json"))
    assert state.phase == "done" and state.finished and state.past_retries
    assert state.attempt == 2 and state.pid
    assert ControllerState.from_json(state.to_json()) == state


def test_the_daemons_state() -> None:
    data = fixture("daemon_state.json")
    state = DaemonState.from_json(data)
    assert state.pid == data["pid"] and state.paused
    assert state.probes.last_light and state.nodes["local"]["status"] in ("up", "unhealthy")
    assert [e.job_id for e in state.queue] == [e["job_id"] for e in data["queue"]]
    assert "paused" in state.queue[0].reason and state.waiting == 2
    again = DaemonState.from_json(state.to_json())
    assert again == replace(state)
    assert DaemonState.from_json({}) == DaemonState()  # a missing file: the defaults


def test_todays_files_are_written_as_the_last_release_reads_them(tmp_path: Path) -> None:
    """The other way round: what this release writes has every key the last one read."""
    state = DaemonState.from_json(fixture("daemon_state.json")).to_json()
    assert set(fixture("daemon_state.json")) <= set(state) | {"stopped_at"}
    controller = ControllerState.from_json(fixture("controller_state.json")).to_json()
    assert set(fixture("controller_state.json")) <= set(controller)
