"""Reading a job's curves (metrics.jsonl, or TensorBoard events any script wrote), its summary
figures, per-rank totals and stragglers, and summary.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ugro.records.history import Jobs
from ugro.results.metrics import load_curves, rank_totals, stragglers, tokens_per_s
from ugro.results.summary import SUMMARY_FILE, job_results, write_summary


def rank(r: int, node: str, *, step: float, sync: float, tokens: int = 1000, steps: int = 10):
    return {
        "rank": r,
        "node": node,
        "steps": steps,
        "train_s": step * steps,
        "step_time_s": step,
        "data_s": 0.01,
        "sync_s": sync,
        "work_s": step - sync - 0.01,
        "tokens": tokens,
        "samples": 10,
        "peak_memory_mb": 100.0 + r,
    }


def train_line(step: int, loss: float, ranks: list[dict]) -> dict:
    return {
        "kind": "train",
        "step": step,
        "loss": loss,
        "train_s": max(r["train_s"] for r in ranks),
        "tokens": sum(r["tokens"] for r in ranks),
        "tokens_per_s": 99999.0,  # a rate the summary must not average
        "ranks": ranks,
    }


def test_tokens_per_second_is_counted_tokens_over_training_time() -> None:
    # Two intervals: 3000 tokens in 10 s, then 3000 in 2 s. The mean of the rates (300 and
    # 1500) would say 900; the run did 6000 tokens in 12 s.
    first = [rank(r, "n", step=1.0, sync=0.0) for r in range(3)]
    second = [rank(r, "n", step=0.2, sync=0.0) for r in range(3)]
    train = [train_line(10, 3.0, first), train_line(20, 2.0, second)]
    assert tokens_per_s(train) == 500.0


def test_a_straggler_is_the_rank_that_waits_least() -> None:
    # Under DDP every rank's step lasts 1 s; gpu2 works 0.9 s of it, the others 0.4 s and
    # wait 0.5 s for it in the all-reduce.
    ranks = [
        rank(0, "gpu-master", step=1.0, sync=0.5),
        rank(1, "gpu1", step=1.0, sync=0.5),
        rank(2, "gpu2", step=1.0, sync=0.0),
    ]
    totals = rank_totals([train_line(10, 3.0, ranks), train_line(20, 2.0, ranks)])
    assert [t["steps"] for t in totals] == [20, 20, 20]
    assert [t["own_step_s"] for t in totals] == [0.5, 0.5, 1.0]
    assert totals[2]["peak_memory_mb"] == 102.0 and totals[0]["tokens"] == 2000
    (slow,) = stragglers(totals)
    assert (slow["rank"], slow["node"], slow["ratio"]) == (2, "gpu2", 2.0)
    even = rank_totals([train_line(10, 3.0, [rank(r, "n", step=1.0, sync=0.1) for r in range(3)])])
    assert stragglers(even) == []


def test_steps_are_the_last_step_any_record_names(tmp_path: Path) -> None:
    lines = [
        {"kind": "train", "step": 480, "loss": 2.0},
        {"kind": "train", "step": 490, "loss": 1.9},
        {"kind": "summary", "step": 492, "train_runtime": 100.0},
        '{"kind": "train", "st',  # a line being written
    ]
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    (tmp_path / "metrics.jsonl").write_text(text)
    curves = load_curves(tmp_path)
    assert curves.last_step == 492 and [r["step"] for r in curves.train] == [480, 490]


def test_tensorboard_events_from_any_script_become_curves(tmp_path: Path) -> None:
    """Event files as an HF Trainer (train/loss, eval/loss, train/learning_rate) and Lightning
    (train_loss, lr-AdamW, val_loss) write them, nested anywhere under the output directory."""
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    hf = SummaryWriter(str(tmp_path / "runs" / "hf"))
    for step in (5, 10, 15):
        hf.add_scalar("train/loss", 4.0 - step / 10, step)
        hf.add_scalar("train/learning_rate", 1e-4, step)
    hf.add_scalar("eval/loss", 3.1, 15)
    hf.add_scalar("train/train_runtime", 12.0, 17)  # the Trainer's closing figures
    hf.close()
    curves = load_curves(tmp_path)
    assert curves.source == "tensorboard" and curves.last_step == 17
    assert [(r["step"], round(r["loss"], 3)) for r in curves.train] == [
        (5, 3.5),
        (10, 3.0),
        (15, 2.5),
    ]
    assert curves.train[0]["learning_rate"] == pytest.approx(1e-4)
    assert [(r["step"], round(r["eval_loss"], 3)) for r in curves.evals] == [(15, 3.1)]

    lightning = tmp_path / "lightning"
    writer = SummaryWriter(str(lightning / "version_0"))
    writer.add_scalar("train_loss", 1.5, 3)
    writer.add_scalar("lr-AdamW", 0.01, 3)
    writer.add_scalar("val_loss", 1.7, 3)
    writer.close()
    curves = load_curves(lightning)
    assert [(r["step"], r["loss"], r["learning_rate"]) for r in curves.train] == [
        (3, 1.5, pytest.approx(0.01))
    ]
    assert curves.evals[0]["eval_loss"] == pytest.approx(1.7)


def test_a_foreign_events_file_is_skipped_not_fatal(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    (tmp_path / "events.out.tfevents.123.host").write_bytes(b"\x00garbage" * 10)
    curves = load_curves(tmp_path)
    assert curves.source == "tensorboard" and curves.train == [] and curves.last_step == 0


def test_summary_json_is_written_once_and_read_back(cluster) -> None:
    jobs = Jobs(cluster)
    job_id = "sum_20260101_000000"
    directory = jobs.create(job_id)
    for state in ("launching", "running", "succeeded"):
        jobs.record(job_id, state)  # type: ignore[arg-type]
    ranks = [rank(0, "m", step=0.5, sync=0.1), rank(1, "w", step=0.5, sync=0.0)]
    (directory / "metrics.jsonl").write_text(json.dumps(train_line(10, 2.0, ranks)) + "\n")
    written = write_summary(jobs, jobs.find(job_id))
    assert written["steps"] == 10 and written["tokens_per_s"] == 400.0
    assert json.loads((directory / SUMMARY_FILE).read_text())["tokens"] == 2000
    # Read from the file from now on: the curves changing afterwards change nothing ...
    (directory / "metrics.jsonl").write_text("")
    assert job_results(jobs, jobs.find(job_id))["tokens_per_s"] == 400.0
    # ... unless the file is of another attempt or state.
    jobs.record(job_id, "launching", attempt=2)
    assert job_results(jobs, jobs.find(job_id))["tokens_per_s"] is None


def test_a_cached_read_sees_appends_and_rewrites(tmp_path: Path) -> None:
    """The dashboard polls growing files: only what was appended is read, a line being
    written waits for its end, and a file replaced by a new run starts over."""
    path = tmp_path / "metrics.jsonl"
    line = lambda step: json.dumps({"kind": "train", "step": step, "loss": 1.0}) + "\n"  # noqa: E731
    path.write_text(line(1) + line(2))
    assert [r["step"] for r in load_curves(tmp_path, cached=True).train] == [1, 2]
    with open(path, "a") as handle:
        handle.write(line(3)[:10])
    assert [r["step"] for r in load_curves(tmp_path, cached=True).train] == [1, 2]
    with open(path, "a") as handle:
        handle.write(line(3)[10:] + line(4))
    curves = load_curves(tmp_path, cached=True)
    assert [r["step"] for r in curves.train] == [1, 2, 3, 4] and curves.last_step == 4
    replacement = tmp_path / "new.jsonl"
    replacement.write_text(line(1) + line(2) + line(3) + line(4) + line(5))
    replacement.replace(path)  # a new file, longer than the old one
    assert [r["step"] for r in load_curves(tmp_path, cached=True).train] == [1, 2, 3, 4, 5]


def test_a_first_look_at_a_long_run_is_thinned_and_polls_get_what_is_new(tmp_path: Path) -> None:
    from ugro.views import curves_view

    lines = [{"kind": "train", "step": s, "loss": 1.0 / s} for s in range(1, 10_001)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    first = curves_view(tmp_path, max_points=1000)
    steps = [p["step"] for p in first["train"]]
    assert len(steps) <= 1001 and steps[0] == 1 and steps[-1] == 10_000
    assert first["total"] == 10_000 and first["last_step"] == 10_000
    assert [p["step"] for p in curves_view(tmp_path, since=9_998)["train"]] == [9_999, 10_000]
    assert curves_view(tmp_path, since=10_000)["train"] == []


def test_lines_of_another_shape_are_skipped_or_trimmed_never_fatal(cluster) -> None:
    """A script of the user's own may write a metrics.jsonl (or telemetry) of its own shape:
    results, plots and the dashboard's views read what they can and never fail on it."""
    from ugro.results.plots import draw, job_curves
    from ugro.views import curves_view, telemetry_view

    jobs = Jobs(cluster)
    directory = jobs.create("odd_20260101_000000")
    jobs.record("odd_20260101_000000", "launching")
    lines = [
        {"kind": "train", "step": "five", "loss": 1.0},
        {"kind": "train", "step": 1, "loss": "high", "tokens": "many"},
        {"kind": "train", "step": 2, "loss": 2.0, "train_s": "x", "ranks": "all"},
        {
            "kind": "train",
            "step": 3,
            "loss": 1.5,
            "ranks": [{"rank": "0"}, {"rank": 1, "steps": "2"}],
        },
        {"kind": "eval", "step": True, "eval_loss": 1.0},
        ["not", "a", "dict"],
    ]
    (directory / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (directory / "logs").mkdir(exist_ok=True)
    (directory / "logs" / "n.telemetry.jsonl").write_text(
        json.dumps({"t": "now"})
        + "\n"
        + json.dumps({"t": 1.0, "cpu_percent": "busy", "job_rss_mb": 5, "gpus": [{"util": "x"}, 3]})
        + "\n"
    )
    summary = job_results(jobs, jobs.find("odd_20260101_000000"))
    assert (
        summary["steps"] == 3 and summary["final_loss"] == 1.5 and summary["tokens_per_s"] is None
    )
    assert [r["rank"] for r in summary["ranks"]] == [1]
    assert [p["step"] for p in curves_view(directory)["train"]] == [2, 3]
    assert telemetry_view(directory) == {"n": [{"t": 1.0, "job_rss_mb": 5, "gpus": [{}]}]}
    assert draw([job_curves("odd", directory)], directory / "odd.png")
