"""The daemon: what it saves a launch, and what it costs while it watches the nodes.

launch     to the first training step, interleaved, on the same nodes:
             with_daemon     `ugro launch` in a project whose daemon runs (the nodes' fresh
                             reports stand in for the preflight probe)
             without_daemon  `ugro launch` in a project with none (the preflight probes)
             by_hand         the same torchrun commands over ssh
cpu        the daemon's own CPU (its process and the ssh/probe processes it waits for, from
           /proc: utime+stime+cutime+cstime) over a window while it monitors the nodes and
           nothing else happens, as a share of one core; the window starts once it holds a
           fresh report of every node, so what is measured is the steady state.
cli        `ugro status` and `ugro health` answered from the daemon's state, against
           `python -c pass`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
UGRO = [sys.executable, "-m", "ugro"]
sys.path.insert(0, str(REPO))
from bench.run import interleaved, launch_by_hand, launch_once, medians, timed  # noqa: E402
from ugro.records.daemon_files import DaemonFiles  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def project(base: Path, workdir: Path, name: str, probe_interval: float) -> Path:
    data = yaml.safe_load(base.read_text())
    data["paths"] = {"project_root": str(workdir / name)}
    data["daemon"] = {"probe_interval_seconds": probe_interval}
    path = workdir / f"cluster-{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def daemon_files(config: Path) -> DaemonFiles:
    root = Path(yaml.safe_load(config.read_text())["paths"]["project_root"])
    return DaemonFiles(root / "data")


def start_daemon(config: Path, nodes: int, timeout: float = 300) -> int:
    """The daemon started, once it holds a fresh report of every node; its pid."""
    subprocess.run([*UGRO, "--config", str(config), "daemon", "start"], check=True)
    files = daemon_files(config)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = files.state()
        if state.probes.last_light and len(state.reports) >= nodes and state.pid:
            return state.pid
        time.sleep(0.5)
    raise RuntimeError(f"the daemon's first probes did not come within {timeout:.0f}s")


def stop_daemon(config: Path) -> None:
    subprocess.run(
        [*UGRO, "--config", str(config), "daemon", "stop"], check=False, capture_output=True
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime: fields 14-17 of stat, 12-15 after the name.
    return sum(int(v) for v in fields[11:15]) / CLOCK_TICKS


def bench_daemon_cpu(
    base: Path, workdir: Path, nodes: int, interval: float, window: float, *, running: Path | None
) -> dict:
    """`running`: a project whose daemon runs already (the smoke run's), measured as it is."""
    config = running or project(base, workdir, "daemon-cpu", interval)
    pid = daemon_files(config).state().pid if running else start_daemon(config, nodes)
    assert pid is not None
    try:
        time.sleep(0.5 if running else 1.0)
        before, started = cpu_seconds(pid), time.monotonic()
        time.sleep(window)
        used, elapsed = cpu_seconds(pid) - before, time.monotonic() - started
        probes = daemon_files(config).state().probes
    finally:
        stop_daemon(config)
    result = {
        "nodes": nodes,
        "probe_interval_s": interval,
        "window_s": round(elapsed, 1),
        "cpu_s": round(used, 3),
        "share_of_one_core_pct": round(100 * used / elapsed, 2),
        "last_light": probes.last_light,
    }
    print(f"  daemon cpu: {result}", flush=True)
    return result


def bench_daemon_launch(
    box,
    base: Path,
    workdir: Path,
    nodes: int,
    reps: int,
    *,
    smoke: dict | None = None,
    keep: bool = False,
) -> dict:
    """`smoke`: the launch section's runs without a daemon and by hand, taken as they are (the
    smoke run shows the section works; the full run measures all three side by side). `keep`:
    leave the daemon running (its project is the result's "project")."""
    with_daemon = project(base, workdir, "daemon-on", 2 if smoke else 60)
    without = project(base, workdir, "daemon-off", 60)
    # (The smoke run syncs nothing: a job carries its code, and its sandbox was synced once.)
    for config in () if smoke else (with_daemon, without):
        subprocess.run([*UGRO, "--config", str(config), "sync"], check=True, capture_output=True)
    start_daemon(with_daemon, nodes)
    counter = iter(range(1000))
    prefix = f"daemon{time.strftime('%H%M%S')}n"
    samples: dict[str, list[dict]] = {"with_daemon": [], "without_daemon": [], "by_hand": []}
    try:
        for _ in range(reps):
            samples["with_daemon"].append(launch_once(with_daemon, f"{prefix}{next(counter)}"))
            if smoke:
                samples["without_daemon"].append(smoke["ugro"])
                samples["by_hand"].append(smoke["by_hand"])
                continue
            run = launch_once(without, f"{prefix}{next(counter)}")
            samples["without_daemon"].append(run)
            samples["by_hand"].append(launch_by_hand(box, run["job_dir"], 29900 + next(counter)))
        cli = bench_daemon_cli(with_daemon, 1 if smoke else max(reps, 5))
    finally:
        if not keep:
            stop_daemon(with_daemon)
    result: dict = medians(samples)
    result["project"] = str(with_daemon)
    hand = result["by_hand"]["first_step"]
    for name in ("with_daemon", "without_daemon"):
        result[f"{name}_added_to_first_step_s"] = round(result[name]["first_step"] - hand, 2)
    result["cli"] = cli
    print(f"  launch with and without the daemon: {result}", flush=True)
    return result


def bench_daemon_cli(config: Path, reps: int) -> dict:
    contenders = {
        "python -c pass": lambda: timed([sys.executable, "-c", "pass"]),
        "ugro status": lambda: timed([*UGRO, "--config", str(config), "status"]),
        "ugro health": lambda: timed([*UGRO, "--config", str(config), "health"], check=False),
    }
    result = interleaved(contenders, reps)
    base = result["python -c pass"]["median_s"]
    for entry in result.values():
        entry["above_python_s"] = round(entry["median_s"] - base, 3)
    return result


def bench_daemon(
    box, base: Path, workdir: Path, nodes: int, reps: int, *, smoke: dict | None = None
) -> dict:
    """`base`: a cluster.yaml of `nodes` nodes of the bench sandbox; `smoke`: the launch
    section's result, for a short run."""
    launch = bench_daemon_launch(box, base, workdir, nodes, reps, smoke=smoke, keep=bool(smoke))
    running = Path(launch.pop("project")) if smoke else None
    # The target: one probe a minute; the smoke run only checks the harness, briefly, on the
    # daemon it launched with (probing every 2 s).
    interval, window = (2.0, 1.5) if smoke else (60.0, 300.0)
    try:
        cpu = bench_daemon_cpu(base, workdir, nodes, interval, window, running=running)
    finally:
        if running is not None:
            stop_daemon(running)
    return {"launch": launch, "cpu": cpu}
