"""ugro plot's PNG and ugro compare's table of differences, from experiment directories as jobs
leave them (metrics.jsonl, telemetry, config.json, train_config.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ugro.core.errors import UsageError
from ugro.records.history import Jobs
from ugro.results.compare import compare
from ugro.results.plots import MAX_POINTS, draw, job_curves, plot_line, thin

PNG = b"\x89PNG\r\n\x1a\n"


def make_job(jobs: Jobs, job_id: str, *, lr: float, gpus: bool, steps: int = 40) -> Path:
    directory = jobs.create(job_id)
    for state in ("launching", "running", "succeeded"):
        jobs.record(job_id, state)  # type: ignore[arg-type]
    lines = []
    for step in range(2, steps + 1, 2):
        ranks = [
            {
                "rank": r,
                "node": node,
                "steps": 2,
                "train_s": 1.0,
                "step_time_s": 0.5,
                "sync_s": 0.1 * r,
                "data_s": 0.0,
                "tokens": 128,
                "peak_memory_mb": 300.0,
            }
            for r, node in enumerate(("gpu-master", "gpu1"))
        ]
        lines.append(
            {
                "kind": "train",
                "step": step,
                "loss": 5 - step / 20,
                "learning_rate": lr,
                "train_s": 1.0,
                "tokens": 256,
                "tokens_per_s": 256.0,
                "ranks": ranks,
            }
        )
    lines.append({"kind": "eval", "step": steps, "eval_loss": 3.0})
    (directory / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (directory / "logs").mkdir(exist_ok=True)
    for node in ("gpu-master", "gpu1"):
        samples = [
            {
                "t": 1000.0 + i,
                "node": node,
                "cpu_percent": 50.0,
                "job_cpu_percent": 90.0,
                "job_rss_mb": 400.0,
                "mem_used_mb": 1000.0,
                **({"gpus": [{"index": 0, "util": 80.0, "mem_used_mb": 7000.0}]} if gpus else {}),
            }
            for i in range(5)
        ]
        (directory / "logs" / f"{node}.telemetry.jsonl").write_text(
            "".join(json.dumps(s) + "\n" for s in samples)
        )
    fingerprint = {"python": "3.11.2", "torch": "2.13.0", "cuda": None, "lock_hash": "abc"}
    (directory / "config.json").write_text(
        json.dumps(
            {
                "script": "train_production.py",
                "git_commit": "c0ffee",
                "nodes": ["gpu-master", "gpu1"],
                "ranks_per_node": {"gpu-master": 1, "gpu1": 1},
                "fingerprints": {
                    "gpu-master": fingerprint,
                    "gpu1": fingerprint | ({"torch": "2.12.0"} if gpus else {}),
                },
            }
        )
    )
    (directory / "train_config.json").write_text(
        json.dumps(
            {
                "learning_rate": lr,
                "batch_size": 4,
                "output_dir": str(directory),
                "explicit": ["x"],
                "data": {"padding_packed": 0.01, "train_examples": steps * 10},
            }
        )
    )
    return directory


def test_plot_draws_every_panel_with_data(cluster, tmp_path: Path) -> None:
    jobs = Jobs(cluster)
    one = make_job(jobs, "a_20260101_000000", lr=1e-4, gpus=False)
    two = make_job(jobs, "b_20260101_000000", lr=2e-4, gpus=True)
    out = tmp_path / "both.png"
    drawn = draw([job_curves("a", one), job_curves("b", two)], out)
    assert drawn == ["loss", "lr", "tokens_per_s", "step_time", "memory", "utilisation"]
    assert out.read_bytes().startswith(PNG)
    only = draw([job_curves("a", one)], tmp_path / "loss.png", ["loss"])
    assert only == ["loss"]


def test_nothing_to_plot_is_one_clear_error(cluster, tmp_path: Path) -> None:
    empty = Jobs(cluster).create("empty_20260101_000000")
    with pytest.raises(UsageError, match=r"nothing to plot for e: no metrics\.jsonl"):
        draw([job_curves("e", empty)], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_long_series_are_thinned_before_drawing() -> None:
    xs = list(range(100_000))
    thinned, _ = thin(xs, xs)
    assert MAX_POINTS / 2 <= len(thinned) <= MAX_POINTS and thinned[0] == 0


def test_compare_lists_what_differs_first(cluster) -> None:
    jobs = Jobs(cluster)
    make_job(jobs, "a_20260101_000000", lr=1e-4, gpus=False, steps=40)
    make_job(jobs, "b_20260101_000000", lr=2e-4, gpus=True, steps=20)
    result = compare(jobs, [jobs.find("a_20260101_000000"), jobs.find("b_20260101_000000")])
    assert set(result["differs"]) == {
        "train.learning_rate",
        "env.torch",
        "train.data.train_examples",  # a section of figures compares field by field
    }
    assert result["same"]["train.data.padding_packed"] == 0.01
    assert result["differs"]["env.torch"]["b_20260101_000000"] == "gpu-master: 2.13.0, gpu1: 2.12.0"
    assert result["same"]["train.batch_size"] == 4 and result["same"]["commit"] == "c0ffee"
    assert "train.output_dir" not in result["same"]  # where it was, not how it trained
    assert result["results"]["a_20260101_000000"]["steps"] == 40
    assert result["results"]["b_20260101_000000"]["final_eval_loss"] == 3.0


def test_an_eval_of_one_point_is_drawn_as_a_marker() -> None:
    """A job that evaluates once, at its end: a dashed line of one point draws nothing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots()
    try:
        once = plot_line(axis, "a eval", [40.0], [2.5], "--")
        curve = plot_line(axis, "a", [1.0, 2.0, 3.0], [3.0, 2.9, 2.8], "-")
        assert once.get_marker() == "o" and once.get_markersize() > 0
        assert curve.get_marker() in ("None", None, "")  # a curve stays a plain line
    finally:
        plt.close(figure)
