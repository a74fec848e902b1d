"""The dashboard and the telemetry: how fast the pages and the API answer on a large project,
and what the 1 Hz telemetry sampler costs a node.

project    200 experiments (each with its config, curves and summary.json, as ended jobs
           leave them) and one job of 100,000 metric records (3 ranks each) with 3 nodes of
           telemetry (3 hours at 1 Hz each), served by `ugro dashboard` as a user runs it.
api        each endpoint asked 200 times after one warm-up: p50 and p99 (loopback, one client).
           The big job's first curves request (parsing 100,000 records) is reported apart, as
           cold_s: afterwards the dashboard reads only what a file gained.
render     chromium (playwright) loading a page until it is drawn: the overview with 200 jobs
           listed, and the big job's page with its charts and the nodes' telemetry; the median
           of 5 loads after a first one.
telemetry  scripts/ugro_telemetry.py at 1 Hz for a window, its CPU time (utime+stime from
           /proc) as a share of one core.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
UGRO = [sys.executable, "-m", "ugro"]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
NODES = ("gpu-master", "gpu1", "gpu2")


def build_project(root: Path, *, experiments: int, records: int, samples: int) -> Path:
    """A project as months of use leave it (written directly, no training needed)."""
    shutil.rmtree(root, ignore_errors=True)
    data, config = root / "data", root / "cluster.yaml"
    root.mkdir(parents=True)
    config.write_text(
        yaml.safe_dump(
            {
                "cluster": {
                    "name": "bench-dashboard",
                    "master": {"hostname": "gpu-master", "ip": "127.0.0.1", "user": "bench"},
                },
                "workers": [
                    {"name": n, "hostname": n, "ip": f"10.99.0.{i + 2}", "user": "b", "rank": i + 1}
                    for i, n in enumerate(NODES[1:])
                ],
                "paths": {"project_root": str(root)},
                "dashboard": {"with_daemon": False},
            }
        )
    )
    history = []
    for index in range(experiments):
        job_id = f"exp{index}_20260101_{index:06d}"
        big = index == 0
        directory = data / "experiments" / job_id
        (directory / "logs").mkdir(parents=True)
        for state in ("launching", "running", "succeeded"):
            history.append(
                {
                    "job_id": job_id,
                    "name": f"exp{index}",
                    "state": state,
                    "attempt": 1,
                    "at": "2026-01-01T00:00:00+00:00",
                    **({"nodes": list(NODES)} if state == "launching" else {}),
                }
            )
        (directory / "config.json").write_text(
            json.dumps(
                {
                    "job_id": job_id,
                    "script": "train_production.py",
                    "nodes": list(NODES),
                    "ranks_per_node": dict.fromkeys(NODES, 1),
                    "git_commit": "0" * 40,
                }
            )
        )
        count = records if big else 100
        with open(directory / "metrics.jsonl", "w") as handle:
            for step in range(1, count + 1):
                ranks = [
                    {
                        "rank": r,
                        "node": n,
                        "steps": 1,
                        "train_s": 0.5,
                        "step_time_s": 0.5,
                        "sync_s": 0.1 * r,
                        "data_s": 0.001,
                        "work_s": 0.4,
                        "tokens": 2048,
                        "samples": 8,
                        "peak_memory_mb": 7000.0,
                    }
                    for r, n in enumerate(NODES)
                ]
                handle.write(
                    json.dumps(
                        {
                            "kind": "train",
                            "step": step,
                            "loss": 3 + 1 / step,
                            "learning_rate": 2e-4,
                            "grad_norm": 1.0,
                            "train_s": 0.5,
                            "tokens": 6144,
                            "samples": 24,
                            "tokens_per_s": 12288.0,
                            "ranks": ranks,
                            "peak_memory_mb": [7000.0] * 3,
                        }
                    )
                    + "\n"
                )
        if big:
            for node in NODES:
                with open(directory / "logs" / f"{node}.telemetry.jsonl", "w") as handle:
                    for second in range(samples):
                        handle.write(
                            json.dumps(
                                {
                                    "t": 1.7e9 + second,
                                    "node": node,
                                    "cpu_percent": 35.0,
                                    "mem_used_mb": 9000.0,
                                    "job_cpu_percent": 100.0,
                                    "job_rss_mb": 4000,
                                    "gpus": [
                                        {
                                            "index": 0,
                                            "util": 97.0,
                                            "mem_used_mb": 7100.0,
                                            "mem_total_mb": 8188.0,
                                            "temp_c": 70.0,
                                            "power_w": 190.0,
                                        }
                                    ],
                                }
                            )
                            + "\n"
                        )
    (data / "job_history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in history))
    # summary.json, as each job's controller writes it when the job ends
    sys.path.insert(0, str(REPO))
    from ugro.config import load_cluster_file
    from ugro.records.history import Jobs
    from ugro.results.summary import write_summary

    jobs = Jobs(load_cluster_file(config))
    for record in jobs.records().values():
        write_summary(jobs, record)
    return config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 - loopback
        response.read()
    return time.perf_counter() - started


def percentiles(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        "n": len(ordered),
    }


def bench_api(base: str, big: str, small: str, requests: int) -> dict:
    cold = fetch(f"{base}/api/jobs/{big}/curves")
    last = json.load(urllib.request.urlopen(f"{base}/api/jobs/{big}/curves"))["last_step"]  # noqa: S310
    endpoints = {
        "jobs": "/api/jobs",
        "queue": "/api/queue",
        "cluster": "/api/cluster",
        "results (big job)": f"/api/jobs/{big}/results",
        "curves, a poll (big job)": f"/api/jobs/{big}/curves?since={last}",
        "curves, first look (big job)": f"/api/jobs/{big}/curves",
        "curves (small job)": f"/api/jobs/{small}/curves",
        "telemetry (big job)": f"/api/jobs/{big}/telemetry",
    }
    answers = {"cold_curves_s": round(cold, 3)}
    for name, path in endpoints.items():
        fetch(base + path)
        answers[name] = percentiles([fetch(base + path) for _ in range(requests)])
    return answers


def bench_render(base: str, big: str, experiments: int, loads: int) -> dict:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return {"skipped": "no chromium"}
    results: dict = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        pages = {
            "overview (200 jobs)": (f"{base}/#/", f"text=Jobs ({experiments})"),
            "job (100,000 records, 3 nodes of telemetry)": (
                f"{base}/#/job/{big}",
                "#nodes .uplot canvas",
            ),
        }
        for name, (url, drawn) in pages.items():
            times = []
            for _ in range(loads + 1):
                page.goto("about:blank")
                started = time.perf_counter()
                page.goto(url)
                page.wait_for_selector(drawn, timeout=120_000)
                times.append(time.perf_counter() - started)
            results[name] = {
                "first_s": round(times[0], 3),
                "median_s": round(statistics.median(times[1:]), 3),
            }
        browser.close()
    return results


def bench_telemetry(workdir: Path, window: float) -> dict:
    out = workdir / "telemetry-bench.jsonl"
    out.unlink(missing_ok=True)
    sampler = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "scripts" / "ugro_telemetry.py"),
            "--out",
            str(out),
            "--interval",
            "1",
            "--watch",
            str(os.getpid()),
        ]
    )
    time.sleep(2)  # past its start-up (imports), which a job pays once
    first = _cpu_ticks(sampler.pid)
    time.sleep(window)
    spent = (_cpu_ticks(sampler.pid) - first) / CLOCK_TICKS
    sampler.terminate()
    sampler.wait(timeout=10)
    return {
        "window_s": window,
        "cpu_s": round(spent, 3),
        "core_share_percent": round(100 * spent / window, 3),
        "samples": len(out.read_text().splitlines()),
    }


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def bench_dashboard(workdir: Path, *, smoke: bool) -> dict:
    records = 2_000 if smoke else 100_000
    experiments = 20 if smoke else 200
    root = workdir / "dashboard-project"
    started = time.perf_counter()
    config = build_project(
        root, experiments=experiments, records=records, samples=600 if smoke else 3 * 3600
    )
    built = time.perf_counter() - started
    port = free_port()
    server = subprocess.Popen(
        [*UGRO, "--config", str(config), "dashboard", "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                fetch(f"{base}/api/queue")
                break
            except OSError:
                time.sleep(0.1)
        big, small = "exp0_20260101_000000", "exp1_20260101_000001"
        report = {
            "project": {"experiments": experiments, "records": records, "built_s": round(built, 1)},
            "api": bench_api(base, big, small, 20 if smoke else 200),
            "render": bench_render(base, big, experiments, 1 if smoke else 5),
        }
    finally:
        server.terminate()
        server.wait(timeout=10)
    report["telemetry"] = bench_telemetry(workdir, 3 if smoke else 120)
    return report


if __name__ == "__main__":
    work = Path(os.environ.get("UGRO_BENCH_DIR") or REPO / "bench" / "work")
    work.mkdir(parents=True, exist_ok=True)
    print(json.dumps(bench_dashboard(work, smoke="--smoke" in sys.argv), indent=2))
