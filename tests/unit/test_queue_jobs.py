"""A submitted job on disk: queued, given its nodes, started by its controller, or cancelled
first; and the daemon's unit file, as systemd reads it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ugro.commands.context import Context
from ugro.launch.definition import LaunchRequest
from ugro.queue.cancel import cancel
from ugro.queue.schedule import Placement
from ugro.queue.submit import SUBMISSION, dispatched, queue_order, submission, submit
from ugro.records.controller_files import ControllerHandle, ControllerOptions
from ugro.records.history import Jobs


def request(name: str) -> LaunchRequest:
    return LaunchRequest(name=name, script="train_production.py", args=("--max-steps", "3"))


def test_a_submitted_job_waits_queued_with_what_its_launch_needs(cluster) -> None:
    jobs = Jobs(cluster)
    first = submit(cluster, request("a"), ControllerOptions(retries=2), Placement(count=1))
    second = submit(cluster, request("b"), ControllerOptions(), Placement(nodes=("m",)))
    assert [r.job_id for r in queue_order(jobs.records())] == [first, second]
    record = jobs.find(first)
    assert record.queued and not record.active and not record.ended
    assert record.ended_at is None
    assert record.detail["placement"] == {"nodes": [], "count": 1, "min_vram_gb": None}
    # Private to the user: the request may carry -e values.
    path = jobs.experiment_dir(first) / SUBMISSION
    assert path.stat().st_mode & 0o777 == 0o600
    options, placement = submission(jobs, first)
    assert options.retries == 2 and options.request["args"] == ["--max-steps", "3"]
    assert placement == Placement(count=1)
    # Nothing gives it a controller but the daemon: `ugro status`'s revival leaves it alone.
    assert not ControllerHandle(jobs.experiment_dir(first)).exists()
    assert not dispatched(jobs, record)


def test_a_cancel_before_the_start_wins_and_only_once(cluster) -> None:
    jobs = Jobs(cluster)
    job_id = submit(cluster, request("c"), ControllerOptions(), Placement())
    record = jobs.find(job_id)
    assert cancel(cluster, record)
    assert not cancel(cluster, record)  # already stopped: a second cancel writes nothing
    ended = jobs.find(job_id)
    assert (ended.state, ended.detail["reason"]) == ("stopped", "cancelled before it started")
    assert ended.ended_at is not None
    # A controller that comes now may not start it: the history refuses `launching`.
    assert not jobs.record(job_id, "launching", attempt=1)
    assert queue_order(jobs.records()) == []


def test_a_queued_job_cannot_be_resumed(cluster) -> None:
    from ugro.core.errors import UsageError
    from ugro.launch.start import resume

    job_id = submit(cluster, request("d"), ControllerOptions(), Placement())
    with pytest.raises(UsageError, match="is queued, not ended"):
        resume(cluster, job_id)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_the_daemon_unit_passes_systemd_analyze_verify(cluster, tmp_path: Path) -> None:
    from ugro.commands.daemon import unit_name, unit_text

    ctx = Context(str(cluster.source))
    name = unit_name(ctx)
    assert name.startswith("ugro-t-") and name.endswith(".service")
    text = unit_text(ctx)
    # The daemon only: each job's controller outlives a stop or restart of the unit.
    assert "KillMode=process" in text and "Restart=on-failure" in text
    assert f'"--config" "{cluster.source}"' in text
    unit = tmp_path / name
    unit.write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr
    # The check can fail: a unit systemd cannot read is reported.
    unit.write_text(text.replace("KillMode=process", "KillMode=bogus"))
    broken = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert "KillMode" in broken.stderr or "kill mode" in broken.stderr


def test_systemd_quoting_keeps_odd_paths_whole() -> None:
    from ugro.commands.daemon import _quote

    assert _quote('/a b/"c"/50%/$HOME') == '"/a b/\\"c\\"/50%%/$$HOME"'
