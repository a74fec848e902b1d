"""Slurm beside UGRO's own scheduling, on a Slurm sandbox of the benchmark's own.

  deploy     `ugro slurm up` on 3 nodes from scratch (after `ugro slurm down`: no slurm.conf,
             no daemons, no state; the packages installed) and again (nothing to change)
  launch     the same short job (`ugro launch`, the tiny model, 3 nodes) scheduled by UGRO and
             by Slurm (`--scheduler slurm`), interleaved: seconds from the command's start to
             the first training step in the lead's metrics, and to the job's end

Each figure is a median of --reps runs; the launch pair is reported as a ratio. Slurm is one per
machine: run this with no other Slurm sandbox up (the test suite's included). Results go to
bench/results/<date>-slurm.json; the figures are in docs/PERFORMANCE.md.

    .venv/bin/python bench/slurm.py --reps 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
UGRO = [sys.executable, "-m", "ugro"]
sys.path.insert(0, str(REPO))
from ugro.config import load_cluster_file  # noqa: E402
from ugro.records.history import Jobs  # noqa: E402
from ugro.sandbox import layout, lifecycle  # noqa: E402

NAME = "slurmbch"
SUBNET = "10.213.31.0/24"
JOB = ["--", "--max-steps", "4", "--logging-steps", "1", "--eval-strategy", "no",
       "--save-strategy", "no", "--seed", "3"]  # fmt: skip


def ugro(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*UGRO, "--config", str(config), *args], capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"ugro {' '.join(args)}: {done.stderr.strip()[-400:]}")
    return done


def timed(config: Path, *args: str, says: str = "") -> float:
    started = time.monotonic()
    done = ugro(config, *args)
    if done.returncode != 0 or says not in done.stdout:
        raise SystemExit(f"ugro {' '.join(args)}: {(done.stdout + done.stderr)[-400:]}")
    return time.monotonic() - started


def launch_to_first_step(config: Path, name: str, scheduler: str) -> tuple[float, float]:
    jobs = Jobs(load_cluster_file(config))
    started = time.monotonic()
    done = ugro(config, "launch", "--name", name, "--scheduler", scheduler, "--detach", *JOB)
    job_id = done.stdout.split("Launched ", 1)[1].split(" ", 1)[0]
    metrics = jobs.experiment_dir(job_id) / "metrics.jsonl"
    first = None
    while True:
        now = time.monotonic()
        if first is None and metrics.is_file() and metrics.stat().st_size > 0:
            first = now - started
        record = jobs.find(job_id)
        if not record.active and record.state is not None and first is not None:
            if record.state != "succeeded":
                raise SystemExit(f"{job_id} {record.state}: {record.detail.get('reason')}")
            return first, now - started
        if now - started > 300:
            raise SystemExit(f"{job_id}: no end within 300 s")
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    reps = parser.parse_args().reps
    if layout.load(NAME) is not None:
        lifecycle.down(NAME, echo=lambda _line: None)
    made = subprocess.run(
        [*UGRO, "sandbox", "up", "--name", NAME, "--subnet", SUBNET, "--slurm"],
        capture_output=True, text=True,
    )  # fmt: skip
    if made.returncode != 0:
        raise SystemExit(made.stdout + made.stderr)
    config = layout.load(NAME).cluster_file  # type: ignore[union-attr]
    figures: dict[str, list[float]] = {k: [] for k in (
        "up_scratch_s", "up_again_s", "ugro_first_step_s", "slurm_first_step_s",
        "ugro_end_s", "slurm_end_s")}  # fmt: skip
    try:
        for rep in range(reps):
            timed(config, "slurm", "down")
            figures["up_scratch_s"].append(timed(config, "slurm", "up", says="changes"))
            figures["up_again_s"].append(timed(config, "slurm", "up", says="nothing changed"))
            for scheduler in ("ugro", "slurm") if rep % 2 == 0 else ("slurm", "ugro"):
                first, end = launch_to_first_step(config, f"b{scheduler}{rep}", scheduler)
                figures[f"{scheduler}_first_step_s"].append(first)
                figures[f"{scheduler}_end_s"].append(end)
            print(
                f"rep {rep + 1}/{reps}: "
                + ", ".join(f"{k} {v[-1]:.1f}" for k, v in figures.items())
            )
    finally:
        lifecycle.down(NAME, echo=lambda _line: None)
    medians: dict[str, Any] = {k: round(statistics.median(v), 2) for k, v in figures.items()}
    medians["slurm_vs_ugro_first_step"] = round(
        medians["slurm_first_step_s"] / medians["ugro_first_step_s"], 2
    )
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "reps": reps,
        "runs": figures,
        "medians": medians,
    }
    out = REPO / "bench" / "results" / f"{date.today().isoformat()}-slurm.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(medians, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
