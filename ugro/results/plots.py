"""One PNG of one or more jobs' curves: `ugro plot` and `ugro compare -o`.

Panels, each drawn only where some job has its data: loss (train solid, eval dashed), learning
rate and tokens/s by step; each rank's own step time (waiting for peers left out, so a
straggler stands out) by step; and each node's memory and utilisation over the job's time
(GPUs where the node's telemetry has them, else the job's processes' memory and CPU). Long
series are thinned before drawing: 100,000 points are not 100,000 segments on 600 pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ugro.core.errors import UsageError
from ugro.results.metrics import Curves, load_curves, load_telemetry

METRICS = ("loss", "lr", "tokens_per_s", "step_time", "memory", "utilisation")
TITLES = {
    "loss": "loss (train; eval dashed)",
    "lr": "learning rate",
    "tokens_per_s": "tokens/s (the cluster's)",
    "step_time": "each rank's own step time (s)",
    "memory": "memory per node (MB: GPU, else the job's processes)",
    "utilisation": "utilisation per node (%: GPU, else the job's CPU, 100 a core)",
}
MAX_POINTS = 4000


@dataclass
class JobCurves:
    label: str
    curves: Curves
    telemetry: dict[str, list[dict[str, Any]]]


def job_curves(label: str, directory: Path) -> JobCurves:
    return JobCurves(label, load_curves(directory), load_telemetry(directory))


def thin(xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
    step = max(1, len(xs) // MAX_POINTS)
    return list(xs[::step]), list(ys[::step])


def _series(job: JobCurves, metric: str) -> list[tuple[str, list[float], list[float], str]]:
    """(label, x, y, line style) for one job's panel."""
    train, evals = job.curves.train, job.curves.evals

    def by_step(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        return [float(p[0]) for p in points], [float(p[1]) for p in points]

    lines: list[tuple[str, list[float], list[float], str]] = []
    if metric == "loss":
        lines.append((f"{job.label} train", *by_step(train, "loss"), "-"))
        lines.append((f"{job.label} eval", *by_step(evals, "eval_loss"), "--"))
    elif metric == "lr":
        lines.append((job.label, *by_step(train, "learning_rate"), "-"))
    elif metric == "tokens_per_s":
        lines.append((job.label, *by_step(train, "tokens_per_s"), "-"))
    elif metric == "step_time":
        ranks: dict[int, tuple[str, list[float], list[float]]] = {}
        for record in train:
            for figures in record.get("ranks") or []:
                own = float(figures.get("step_time_s") or 0) - float(figures.get("sync_s") or 0)
                name = f"{job.label} r{figures.get('rank')} {figures.get('node')}"
                entry = ranks.setdefault(int(figures.get("rank", 0)), (name, [], []))
                entry[1].append(float(record["step"]))
                entry[2].append(own)
        lines.extend((name, xs, ys, "-") for name, xs, ys in ranks.values())
    elif metric in ("memory", "utilisation"):
        for node, samples in job.telemetry.items():
            start = float(samples[0]["t"])
            times = [float(s["t"]) - start for s in samples]
            if any(s.get("gpus") for s in samples):
                count = max(len(s.get("gpus") or []) for s in samples)
                key = "mem_used_mb" if metric == "memory" else "util"
                for index in range(count):
                    points = [
                        (t, s["gpus"][index].get(key))
                        for t, s in zip(times, samples, strict=True)
                        if len(s.get("gpus") or []) > index
                        and isinstance(s["gpus"][index].get(key), (int, float))
                    ]
                    lines.append(
                        (
                            f"{job.label} {node} gpu{index}",
                            [p[0] for p in points],
                            [float(p[1]) for p in points],
                            "-",
                        )
                    )
            else:
                # No GPU: the job's own processes (several nodes may share one machine).
                key = "job_rss_mb" if metric == "memory" else "job_cpu_percent"
                values = [float(s.get(key) or 0) for s in samples]
                lines.append((f"{job.label} {node} (cpu)", times, values, ":"))
    return [line for line in lines if line[1]]


def plot_line(axis: Any, label: str, xs: list[float], ys: list[float], style: str) -> Any:
    """One series on a panel. A series of one point (a job that evaluates once, at its end)
    is drawn as a marker: a line of one point, dashed or not, would not show at all."""
    xs, ys = thin(xs, ys)
    marker = {"marker": "o", "markersize": 4} if len(xs) == 1 else {}
    (line,) = axis.plot(xs, ys, style, label=label, linewidth=1.2, **marker)
    return line


def draw(jobs: list[JobCurves], out: Path, metrics: Sequence[str] = METRICS) -> list[str]:
    """Draw the panels that have data into `out` (PNG); returns the panels drawn."""
    # matplotlib takes a second to import: only `plot` and `compare -o` draw.
    import matplotlib

    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt

    panels = [(m, [line for job in jobs for line in _series(job, m)]) for m in metrics]
    panels = [(m, lines) for m, lines in panels if lines]
    if not panels:
        names = ", ".join(job.label for job in jobs)
        raise UsageError(
            f"nothing to plot for {names}: no metrics.jsonl, TensorBoard events or telemetry yet"
        )
    columns = 1 if len(panels) == 1 else 2
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(7 * columns, 3.4 * rows), squeeze=False)
    for (metric, lines), axis in zip(panels, axes.flat, strict=False):
        for label, xs, ys, style in lines:
            plot_line(axis, label, xs, ys, style)
        axis.set_title(TITLES[metric], fontsize=10)
        axis.set_xlabel("seconds into the job" if metric in ("memory", "utilisation") else "step")
        axis.grid(alpha=0.3)
        if metric == "lr":
            axis.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        axis.legend(fontsize=7, loc="best")
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    figure.suptitle(", ".join(job.label for job in jobs), fontsize=11)
    figure.tight_layout()
    try:
        figure.savefig(out, dpi=100)
    except OSError as exc:
        raise UsageError(f"{out}: cannot write it ({exc.strerror or exc})") from None
    finally:
        plt.close(figure)
    return [metric for metric, _ in panels]
