"""The benchmark harness runs end to end (one repetition, on a 2-node sandbox of its own, beside
the session's sandbox's tests), so that it cannot rot.

Nothing here is timed: the smoke run checks that every section produces its figures, each in
its shortest form (bench/run.py --smoke); the full benchmarks are `bash scripts/bench.sh`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.integration.conftest import sandbox_unavailable

pytestmark = pytest.mark.slow


@pytest.mark.timeout(900)
def test_bench_smoke(tmp_path) -> None:
    reason = sandbox_unavailable()
    if reason:
        pytest.skip(f"no sandbox: {reason}")
    process = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "run.py"), "--smoke"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "UGRO_BENCH_DIR": str(tmp_path)},
    )
    try:
        stdout, stderr = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        # Ctrl-C, not SIGKILL: the bench takes its sandbox down (and its throttle) on the way out.
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
        pytest.fail(f"the smoke bench took over 600 s: {stdout[-2000:]}{stderr[-2000:]}")
    assert process.returncode == 0, stdout[-3000:] + stderr[-3000:]
    report = json.loads((REPO / "bench" / "results" / "smoke.json").read_text())
    assert set(report["sections_s"]) == {
        "fanout",
        "settings",
        "launch",
        "cli",
        "memory",
        "recovery",
        "daemon",
        "dashboard",
        "balance",
        "network",
    }
    fanout = report["fanout"]["2"]
    assert {"ugro", "floor", "seed"} <= set(fanout)  # the --deep pair: in the full run only
    assert fanout["ugro_over_floor"] > 0 and fanout["seed_over_ugro"] > 0
    assert report["launch"]["ugro"]["first_step"] > 0
    assert report["launch"]["by_hand"]["first_step"] > 0
    assert report["cli"]["ugro --help"]["median_s"] > 0
    assert report["memory"]["ugro_peak_rss_mib"] > 0
    assert "defaults (pipelining, ControlPersist, 64 forks, no facts)" in report["settings"]
    recovery = report["recovery"]["rank_killed"]
    assert recovery["ugro"]["cause"] == "killed"
    assert 0 < recovery["ugro"]["detected"] <= recovery["ugro"]["down"]
    assert "trains_again" in recovery["torchrun"]
    daemon = report["daemon"]
    for contender in ("with_daemon", "without_daemon", "by_hand"):
        assert daemon["launch"][contender]["first_step"] > 0
    assert daemon["launch"]["cli"]["ugro status"]["median_s"] > 0
    assert daemon["cpu"]["cpu_s"] >= 0 and daemon["cpu"]["window_s"] > 0
    dashboard = report["dashboard"]
    assert dashboard["api"]["jobs"]["p99_ms"] > 0 and dashboard["api"]["cold_curves_s"] > 0
    for page in dashboard["render"].values():
        assert page["median_s"] > 0
    assert dashboard["telemetry"]["samples"] >= 3 and dashboard["telemetry"]["cpu_s"] >= 0
    balance = report["balance"]
    for mode in ("equal", "auto"):
        assert balance[mode]["tokens_per_s"] > 0
    assert len(balance["auto"]["micro_batches"]) == 2 and balance["auto_over_equal"] > 0
    network = report["network"]
    assert network["free"]["busbw_gbps"] > 0 and network["limited"]["busbw_gbps"] > 0
    assert 0 < network["limited_pair_over_limit"] < 2
