"""The GPU check (scripts/gpu_check.sh) runs on this CPU machine, smaller: every step it takes on
a GPU (health, training packed and unpacked with and without checkpointing, the balance probe,
the throughput bench against the plain Trainer, serving against generate in a loop) produces its
figures, so the prepared run for a
lent GPU machine cannot rot. Nothing here is timed; its figures mean nothing on a CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_the_gpu_check_runs_on_the_cpu(tmp_path) -> None:
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        timeout=580,
        check=False,
        env={
            **os.environ,
            "OUT": str(tmp_path),
            "UGRO_GPU_CHECK_PYTHON": sys.executable,
            "UGRO_BENCH_DIR": str(tmp_path),
        },
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["cuda"] is False
    assert report["health"]["healthy"] is True, report["health"]
    runs = report["training"]
    # Off the GPU: each option once (on a GPU, all four pairs).
    assert set(runs) == {"packing_gradient-checkpointing", "no-packing_no-gradient-checkpointing"}
    for name, run in runs.items():
        assert run["tokens_per_s"] > 0 and run["peak_memory_mb"] > 0, name
        assert run["dtype"] == "float32" and run["attention"] == "sdpa"
        assert run["gradient_checkpointing"] is name.endswith("_gradient-checkpointing")
    assert runs["packing_gradient-checkpointing"]["padding"] < 0.03
    assert runs["no-packing_no-gradient-checkpointing"]["padding"] > 0.1
    # The search stopped at the declared budget, below the micro-batch asked for.
    probe = report["balance_probe"]["ranks"][0]
    assert 1 <= probe["fit"] < 16 and probe["budget_source"] == "declared", probe
    speeds = report["throughput"]["tokens_per_s_per_rank"]
    assert min(speeds[k]["median"] for k in ("ugro", "plain")) > 0
    # Serving (bench/serve.py's smoke run): the floor and UGRO's server, each level once.
    serving = report["serving"]
    assert serving["floor"]["tokens_per_s"] > 0 and set(serving["ugro"]) == {"1", "4"}
    assert serving["ratios"]["ugro_over_floor_tokens_per_s_at_4"] > 0
