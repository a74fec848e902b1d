"""Health monitoring: a light probe's report as a verdict, the history and its transitions,
and the probe itself run here on this machine (a real subprocess, as on a node)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ugro.health.monitor import Sample, judge, light_probe, read_history, record, transitions

GPU = {"index": 0, "name": "RTX 4070", "vram_total_mb": 8188, "vram_free_mb": 8000}


def report(**overrides) -> dict:
    """A probe report's shape (roles/ugro_health/module_utils/ugro_probe.py)."""
    return {
        "problems": [],
        "load1": 0.2,
        "cpus": 8,
        "disk_free_gb": 100.0,
        "gpus": [GPU],
        "driver_version": "550.1",
        "ugro_jobs": {"exp1_20260101_000000": [101, 102]},
        **overrides,
    }


def test_a_report_becomes_a_verdict() -> None:
    sample = judge("gpu1", 1.0, report(), None)
    assert (sample.status, sample.problems, sample.gpus) == ("up", (), ("RTX 4070",))
    assert sample.vram_gb == 8.0 and sample.driver == "550.1"
    assert sample.ugro_jobs == {"exp1_20260101_000000": 2}
    problem = "disk filling: only 1.5 GB free at /home/ob (need 5.0)"
    filling = judge("gpu1", 2.0, report(problems=[problem]), sample)
    assert filling.status == "unhealthy" and filling.problems == (problem,)
    lost = judge("gpu1", 3.0, report(gpus=[]), sample)
    assert lost.problems == ("GPU lost: 1 seen before, 0 now",)
    loaded = judge("gpu1", 5.0, report(load1=9.0), None)
    assert loaded.loaded and not sample.loaded
    # The whole report stays with the sample (for a launch), not in the history's line.
    assert sample.report["driver_version"] == "550.1" and "report" not in sample.to_json()


def test_transitions_name_what_changed(tmp_path: Path) -> None:
    up = Sample("gpu1", 1.0, "light", "up", gpus=("A",), driver="550.1")
    history = tmp_path / "health_history.jsonl"
    record(
        history,
        [
            up,
            Sample("gpu2", 1.0, "light", "up"),
            Sample("gpu1", 61.0, "light", "down", ("no answer within 25s",)),
            Sample("gpu1", 121.0, "light", "up", gpus=("A",), driver="555.2"),
            Sample("gpu1", 181.0, "light", "unhealthy", ("disk filling: 1 GB free",), ("A",)),
        ],
    )
    with open(history, "a") as handle:
        handle.write('{"node": "gpu1", "at": 2')  # torn by a crash mid-line: skipped
    samples = read_history(history, "gpu1")
    assert len(samples) == 4
    changes = [text for _, text in transitions(samples)]
    # The driver changed while the node was down (a reboot): it shows when it answers again.
    assert changes == [
        "first seen up",
        "up -> down: no answer within 25s",
        "down -> up",
        "driver changed: 550.1 -> 555.2",
        "up -> unhealthy: disk filling: 1 GB free",
    ]
    without_gpu = Sample("gpu1", 9, "light", "up", driver="550.1")
    assert [t for _, t in transitions([up, without_gpu])] == ["first seen up", "GPU lost: 1 -> 0"]
    assert Sample.from_json(json.loads(json.dumps(up.to_json()))) == up


def test_the_light_probe_runs_as_it_would_on_a_node(cluster) -> None:
    # The master is reached locally: the probe is the real script under a real interpreter.
    from dataclasses import replace

    cluster = replace(cluster, ssh=replace(cluster.ssh, python_interpreter=sys.executable))
    sample = light_probe(cluster, cluster.master, 1.0)
    assert sample.status in ("up", "unhealthy"), sample
    assert sample.disk_free_gb is not None and sample.cpus and sample.load1 is not None
    # --light never starts the training interpreter: torch's facts only from a cache.
    assert sample.report["interface"] == "lo"
    assert "torch_error" not in sample.report["env"]
    broken = replace(cluster, ssh=replace(cluster.ssh, python_interpreter="/nonexistent/python"))
    down = light_probe(broken, broken.master, 1.0)
    assert down.status == "down" and "cannot run" in down.problems[0]


def test_the_history_rotates_and_reads_back_whole(tmp_path: Path, monkeypatch) -> None:
    from ugro.health import monitor

    monkeypatch.setattr(monitor, "ROTATE_BYTES", 300)
    history = tmp_path / "health_history.jsonl"
    for at in range(6):
        record(history, [Sample("gpu1", float(at), "light", "up" if at % 2 else "down")])
    assert (tmp_path / "health_history.jsonl.1").exists()
    # The rotated part, then the current one, in order; the part before that is gone.
    ats = [s.at for s in read_history(history)]
    assert ats == [float(a) for a in range(int(ats[0]), 6)] and len(ats) < 6
    assert len(read_history(history)) > len(read_history(history, tail=200))
    assert read_history(history, tail=200)[-1].at == 5.0
