"""scripts/ugro_telemetry.py: real psutil samples of this machine and of a watched process tree;
GPUs through a stand-in `nvidia-smi` (this machine has no GPU, so neither NVML nor the real
nvidia-smi can run here), shaped as `--query-gpu ... --format=csv,noheader,nounits` prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

SCRIPT = REPO_ROOT / "scripts" / "ugro_telemetry.py"
sys.path.insert(0, str(SCRIPT.parent))
import ugro_telemetry  # noqa: E402

# A stand-in for nvidia-smi: two GPUs, one lines per loop, as the real one prints them (an
# RTX 4070 throttled by its power cap, and a card that reports no power).
FAKE_SMI = """#!/bin/sh
while :; do
  echo "0, 97, 7012, 8188, 71, 190.52, 2805, 10501, 0x0000000000000004"
  echo "1, 3, 412, 8192, 40, [N/A], 210, 405, 0x0000000000000001"
  sleep 0.2
done
"""


def run_sampler(tmp_path: Path, *args: str, env: dict[str, str] | None = None, **kw):
    out = tmp_path / "logs" / "gpu1.telemetry.jsonl"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "UGRO_NODE": "gpu1", **(env or {})},
        check=False,
        **kw,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in out.read_text().splitlines()], done


def test_samples_cpu_memory_disk_network_and_the_job_tree(tmp_path: Path) -> None:
    busy = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.time() + 30\nwhile time.time() < end: pass"]
    )
    try:
        samples, _ = run_sampler(
            tmp_path, "--interval", "0.2", "--count", "5", "--watch", str(busy.pid)
        )
    finally:
        busy.kill()
        busy.wait()
    assert len(samples) == 5
    last = samples[-1]
    assert last["node"] == "gpu1" and "gpus" not in last  # no GPU here, none pretended
    assert 0 < last["mem_used_mb"] < last["mem_total_mb"]
    assert last["disk_free_gb"] > 0 and last["net_rx_mb_s"] >= 0
    # The watched busy loop's CPU is counted (a whole core on an idle machine; the suite runs
    # two lanes side by side, so less is certain).
    assert last["job_cpu_percent"] > 10
    assert last["job_rss_mb"] > 1
    stamps = [s["t"] for s in samples]
    assert stamps == sorted(stamps) and stamps[-1] - stamps[0] < 3


def test_it_ends_with_the_watched_process(tmp_path: Path) -> None:
    watched = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])
    began = time.monotonic()
    samples, _ = run_sampler(tmp_path, "--interval", "0.2", "--watch", str(watched.pid))
    watched.wait()
    assert time.monotonic() - began < 10 and samples


def test_gpus_from_nvidia_smi_where_nvml_cannot_start(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    samples, done = run_sampler(
        tmp_path,
        "--interval",
        "0.5",
        "--count",
        "3",
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )
    assert "using nvidia-smi" in done.stderr
    gpus = samples[-1]["gpus"]
    assert gpus[0] == {
        "index": 0,
        "util": 97.0,
        "mem_used_mb": 7012.0,
        "mem_total_mb": 8188.0,
        "temp_c": 71.0,
        "power_w": 190.5,
        "sm_clock_mhz": 2805.0,
        "mem_clock_mhz": 10501.0,
        "throttle": ["sw_power_cap"],
    }
    assert gpus[1]["power_w"] is None and gpus[1]["throttle"] == ["gpu_idle"]
    # The stand-in ends with the sampler: nvidia-smi runs once per job, not once per sample.
    left = subprocess.run(["pgrep", "-f", str(smi)], capture_output=True, check=False)
    assert left.returncode == 1, left.stdout


def test_unparseable_lines_are_skipped() -> None:
    assert ugro_telemetry.parse_smi_line("index, utilization.gpu") is None
    assert ugro_telemetry.parse_smi_line("NVIDIA-SMI has failed") is None
    assert ugro_telemetry.throttle_reasons(0x44) == ["sw_power_cap", "hw_thermal_slowdown"]
