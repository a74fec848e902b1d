#!/usr/bin/env python3
"""UGRO benchmarks: how fast it fans out, launches and answers, side by side with the baselines.

Runs on a sandbox of its own (root needed), measures each pair of contenders interleaved, and
reports medians and ratios (absolute times drift on a shared machine; ratios measured side by
side hold). Results go to bench/results/<date>.json and a table on the terminal.

    python bench/run.py                 # the full set: 3, 8, 16, 32 nodes, 5 repetitions
    python bench/run.py --smoke         # each section once, shortest, on 2 nodes (CI runs this)

Contenders for health fan-out, all running the same probe
(roles/ugro_health/module_utils/ugro_probe.py, sent as ugro sends it):
  ugro      `ugro health --json`
  floor     the probe over plain `ssh`, to every node at once
  seed      the original guide's approach: one `ssh` per probe per node, nodes one after another
ugro and floor run twice: as a user's `ugro health` does by default (torch's facts cached on each
node, see the probe), and `--deep` (torch imported on every node, as the seed always does).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
SANDBOX = "bench"
SUBNET = "10.215.0.0/24"
UGRO = [sys.executable, "-m", "ugro"]

sys.path.insert(0, str(REPO))
from ugro.nodes import scripts  # noqa: E402
from ugro.sandbox import layout, lifecycle  # noqa: E402

# --- measuring ----------------------------------------------------------------------------------


def timed(argv: list[str], *, env: dict[str, str] | None = None, check: bool = True) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        argv,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    elapsed = time.perf_counter() - started
    if check and done.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed ({done.returncode}): {done.stderr[-1000:]}")
    return elapsed


def interleaved(contenders: dict[str, Callable[[], float]], reps: int) -> dict[str, dict]:
    """Each repetition runs every contender once, in turn, so drift hits them all alike."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(reps):
        for name, run in contenders.items():
            samples[name].append(run())
    return {
        name: {"median_s": round(statistics.median(v), 3), "samples_s": [round(x, 3) for x in v]}
        for name, v in samples.items()
    }


class PeakRss:
    """Samples the peak RSS of a process and of its descendants while it runs (from /proc)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_self = 0
        self.peak_tree = 0
        self.peak_ansible = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            tree = _descendants(self.pid)
            rss = {pid: _rss_kib(pid) for pid in tree}
            self.peak_self = max(self.peak_self, rss.get(self.pid, 0))
            self.peak_tree = max(self.peak_tree, sum(rss.values()))
            ansible = sum(v for p, v in rss.items() if p != self.pid and "ansible" in _cmdline(p))
            self.peak_ansible = max(self.peak_ansible, ansible)
            time.sleep(0.05)


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parts = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(parts[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    found, queue = [], [root]
    while queue:
        pid = queue.pop()
        found.append(pid)
        queue.extend(children.get(pid, []))
    return found


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# --- the sandbox and its subsets ----------------------------------------------------------------


def cluster_files(
    box: layout.Sandbox, sizes: list[int], workdir: Path, *, smoke: bool = False
) -> dict[int, Path]:
    """A cluster.yaml per size: the master plus the first size-1 workers of one big sandbox."""
    base = yaml.safe_load(box.cluster_file.read_text())
    files = {}
    for size in sizes:
        data = {**base, "workers": base["workers"][: size - 1]}
        data["paths"] = {"project_root": str(workdir / f"n{size}")}
        if smoke:
            # What the smoke run shows is that the sections work: its retries need not wait.
            data["cluster"] = {
                **data["cluster"],
                "communication": {
                    **data["cluster"].get("communication", {}),
                    "retry_backoff_seconds": 0,
                },
            }
        path = workdir / f"cluster-{size}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        files[size] = path
    return files


def probe_command(
    box: layout.Sandbox, node: layout.NodePlan | None, *, deep: bool = False
) -> list[str]:
    python = f"{box.env_dir}/bin/python"
    project = f"{node.home}/projects/UGRO" if node else str(box.master_project)
    return [
        "/usr/bin/python3",
        "-c",
        # The probe with the process reader it imports inlined, as ugro sends it.
        scripts.script(scripts.PROBE),
        "--python",
        python,
        "--accelerator",
        "cpu",
        "--project-path",
        project,
        "--deep",
        "true" if deep else "false",
    ]


def floor(box: layout.Sandbox, nodes: list[layout.NodePlan], *, deep: bool = False) -> float:
    """The probe over plain ssh to every node at once (the master's runs locally)."""
    started = time.perf_counter()
    processes = [subprocess.Popen(probe_command(box, None, deep=deep), stdout=subprocess.DEVNULL)]
    for node in nodes:
        processes.append(
            subprocess.Popen(
                box.ssh_argv(node, probe_command(box, node, deep=deep)),
                stdout=subprocess.DEVNULL,
            )
        )
    if any(p.wait() != 0 for p in processes):
        raise RuntimeError("the floor's probe failed on a node")
    return time.perf_counter() - started


def seed(box: layout.Sandbox, nodes: list[layout.NodePlan]) -> float:
    """The guide's cluster.py: per node, `ssh echo OK`, `ssh nvidia-smi -L`, `ssh python -c
    'import torch; ...'`, one node after another (master included, over its own probes)."""
    python = f"{box.env_dir}/bin/python"
    started = time.perf_counter()
    for node in nodes:
        for command in (
            ["echo", "OK"],
            ["nvidia-smi", "-L"],
            [python, "-c", "import torch; print(torch.cuda.is_available())"],
        ):
            subprocess.run(box.ssh_argv(node, command), capture_output=True, check=False)
    # The master's probes run locally in the guide too (it connects to itself by address).
    for command in (["echo", "OK"], [python, "-c", "import torch"]):
        subprocess.run(command, capture_output=True, check=False)
    return time.perf_counter() - started


# --- the benchmarks -----------------------------------------------------------------------------


def bench_fanout(box, files, sizes, reps, seed_sizes, *, smoke: bool = False) -> dict:
    """(The smoke run leaves out the --deep pair: the same commands with one flag more.)"""
    out: dict = {}
    for size in sizes:
        nodes = box.nodes[: size - 1]
        health = [*UGRO, "--config", str(files[size]), "health", "--json"]
        timed(health)  # fills each node's torch cache for the `cached` contenders
        contenders = {
            "ugro": lambda h=health: timed(h),
            "floor": lambda n=nodes: floor(box, n),
        }
        if not smoke:
            contenders["ugro_deep"] = lambda h=health: timed([*h, "--deep"])
            contenders["floor_deep"] = lambda n=nodes: floor(box, n, deep=True)
        if size in seed_sizes:
            contenders["seed"] = lambda n=nodes: seed(box, n)
        result = interleaved(contenders, reps)
        median = {name: entry["median_s"] for name, entry in result.items()}
        result["ugro_over_floor"] = round(median["ugro"] / median["floor"], 2)
        if "ugro_deep" in median:
            result["ugro_deep_over_floor_deep"] = round(
                median["ugro_deep"] / median["floor_deep"], 2
            )
        if "seed" in result:
            result["seed_over_ugro"] = round(median["seed"] / median["ugro"], 2)
        if "seed" in result and "ugro_deep" in median:
            result["seed_over_ugro_deep"] = round(median["seed"] / median["ugro_deep"], 2)
        out[str(size)] = result
        print(f"  fan-out {size:>2} nodes: {_summary(result)}", flush=True)
    small, large = str(min(sizes)), str(max(sizes))
    if small != large:
        for name in ("ugro", "floor", "ugro_deep", "floor_deep"):
            out[f"growth_{name}"] = round(
                out[large][name]["median_s"] / out[small][name]["median_s"], 2
            )
    return out


SETTINGS = {
    "defaults (pipelining, ControlPersist, 64 forks, no facts)": {},
    "no pipelining": {"ANSIBLE_PIPELINING": "False"},
    "no ControlPersist": {"ANSIBLE_SSH_ARGS": "-o ControlMaster=no -o BatchMode=yes"},
    "5 forks (Ansible's default)": {"ANSIBLE_FORKS": "5"},
    # The same configuration again: how far apart identical runs land is the noise to read the
    # other rows against. (Fact gathering is not a row: every play sets gather_facts itself.)
    "defaults again (control)": {},
}


def bench_settings(files, size, reps, *, smoke: bool = False) -> dict:
    # The smoke run: the defaults and one variant, to show the section works.
    variants = dict(list(SETTINGS.items())[:2]) if smoke else dict(SETTINGS)
    try:
        if smoke:
            raise ImportError("not in the smoke run")
        import ansible_mitogen

        plugins = Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"
        variants["mitogen_linear strategy"] = {
            "ANSIBLE_STRATEGY_PLUGINS": str(plugins),
            "ANSIBLE_STRATEGY": "mitogen_linear",
        }
    except ImportError:
        pass
    argv = [*UGRO, "--config", str(files[size]), "health", "--json"]
    contenders = {
        name: (lambda e=env: timed(argv, env=e, check=False)) for name, env in variants.items()
    }
    result = interleaved(contenders, reps)
    base = result["defaults (pipelining, ControlPersist, 64 forks, no facts)"]["median_s"]
    for name, entry in result.items():
        entry["over_defaults"] = round(entry["median_s"] / base, 2)
        print(
            f"  settings ({size} nodes) {name}: {entry['median_s']}s ({entry['over_defaults']}x)",
            flush=True,
        )
    if "mitogen_linear strategy" not in variants and not smoke:
        result["mitogen_linear strategy"] = {"skipped": "ansible_mitogen is not installed"}
    return result


TINY_JOB = [
    "--",
    "--max-steps",
    "3",
    "--logging-steps",
    "1",
    "--eval-strategy",
    "no",
    "--save-strategy",
    "no",
]


def _first_step_seconds(
    metrics: Path, started: float, processes: list[subprocess.Popen], timeout: float = 600
) -> float:
    """Seconds until the job's first training step; an error once its processes are all gone
    without one (a run that failed must not hang the bench)."""
    while time.perf_counter() - started < timeout:
        if metrics.exists() and '"kind": "train"' in metrics.read_text():
            return time.perf_counter() - started
        if all(process.poll() is not None for process in processes):
            raise RuntimeError(f"the job ended with no training step in {metrics}")
        time.sleep(0.05)
    raise RuntimeError(f"no training step in {metrics}")


def _by_hand(command: list[str], job_id: str, job_port: int, port: int) -> list[str]:
    """A job's torchrun command run again by hand: its own rendezvous id, port and logs; the
    code it runs stays the job's (each node holds it in the job's code/ directory)."""
    again = []
    for option, value in zip(["", *command[:-1]], command, strict=True):
        if option == "--rdzv-id":
            value = f"{job_id}-byhand"
        elif option == "--log-dir":
            value = value.replace(job_id, f"{job_id}-byhand")
        elif option == "--rdzv-endpoint":
            value = value.replace(f":{job_port}", f":{port}")
        again.append(value)
    return again


def launch_once(config: Path, name: str) -> dict:
    """`ugro launch` of the tiny job, followed to its end: seconds to the first training step
    (its metrics in the master's experiment directory) and in all."""
    project = Path(yaml.safe_load(config.read_text())["paths"]["project_root"])
    own_job = re.compile(rf"{name}_\d{{8}}_\d{{6}}")
    started = time.perf_counter()
    process = subprocess.Popen(
        [*UGRO, "--config", str(config), "launch", "--name", name, *TINY_JOB],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = None
    while first is None:
        found = [
            path
            for path in (project / "data" / "experiments").glob(f"{name}_*/metrics.jsonl")
            if own_job.fullmatch(path.parent.name)
        ]
        if found and '"kind": "train"' in found[0].read_text():
            first = time.perf_counter() - started
        elif process.poll() is not None:
            raise RuntimeError(f"ugro launch ended early: {process.stderr.read()[-1000:]}")
        time.sleep(0.05)
    process.wait()
    return {
        "first_step": first,
        "total": time.perf_counter() - started,
        "job_dir": str(found[0].parent),
        "name": name,
    }


def launch_by_hand(box: layout.Sandbox, job_dir: str, port: int) -> dict:
    """A launched job's own torchrun commands (from its config.json), by ssh to each node at
    once, with a rendezvous of their own."""
    job = json.loads((Path(job_dir) / "config.json").read_text())
    metrics = Path(job_dir + "-byhand") / "metrics.jsonl"
    metrics.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    processes = []
    for name, command in job["commands"].items():
        command = _by_hand(command, job["job_id"], job["rendezvous_port"], port)
        master = name == "gpu-master"
        env = [
            "env",
            "OMP_NUM_THREADS=1",
            f"UGRO_NODE={name}",
            f"UGRO_PRIMARY={1 if master else 0}",
            f"GLOO_SOCKET_IFNAME={box.bridge if master else 'eth0'}",
        ]
        if master:
            env.append(f"UGRO_OUTPUT_DIR={metrics.parent}")
            argv = [*env, *command]
        else:
            node = next(n for n in box.nodes if n.name == name)
            argv = box.ssh_argv(node, [*env, *command])
        processes.append(
            subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    first = _first_step_seconds(metrics, started, processes)
    for process in processes:
        process.wait()
    return {"first_step": first, "total": time.perf_counter() - started}


def medians(samples: dict[str, list[dict]]) -> dict[str, dict]:
    return {
        name: {
            key: round(statistics.median(r[key] for r in runs), 2)
            for key in ("first_step", "total")
        }
        for name, runs in samples.items()
    }


def bench_launch(box, files, size, reps, *, smoke: bool = False) -> dict:
    """`ugro launch` against the same torchrun commands started by hand over ssh (the smoke
    run skips the sync: a job carries its code, and its sandbox was synced once)."""
    config = files[size]
    if not smoke:
        subprocess.run([*UGRO, "--config", str(config), "sync"], check=True, capture_output=True)
    counter = iter(range(1000))
    # Names unique to this bench run: the work directory keeps earlier runs' jobs.
    prefix = f"bench{datetime.now():%H%M%S}n"
    samples: dict[str, list[dict]] = {"ugro": [], "by_hand": []}
    for _ in range(reps):
        run = launch_once(config, f"{prefix}{next(counter)}")
        samples["ugro"].append(run)
        samples["by_hand"].append(launch_by_hand(box, run["job_dir"], 29800 + next(counter)))
    result: dict = medians(samples)
    result["added_to_first_step_s"] = round(
        result["ugro"]["first_step"] - result["by_hand"]["first_step"], 2
    )
    result["added_to_total_s"] = round(result["ugro"]["total"] - result["by_hand"]["total"], 2)
    print(f"  launch ({size} nodes): {result}", flush=True)
    result["job"] = samples["ugro"][0]["name"]  # a finished job, for the CLI section
    result["samples"] = samples  # for the daemon section's smoke run
    return result


def bench_cli(config: Path, job: str | None, reps: int) -> dict:
    contenders = {
        "python -c pass": lambda: timed([sys.executable, "-c", "pass"]),
        "ugro --help": lambda: timed([*UGRO, "--help"]),
    }
    if job:
        contenders["ugro results"] = lambda: timed([*UGRO, "--config", str(config), "results", job])
        contenders["ugro logs"] = lambda: timed([*UGRO, "--config", str(config), "logs", job])
    result = interleaved(contenders, reps)
    base = result["python -c pass"]["median_s"]
    for entry in result.values():
        entry["above_python_s"] = round(entry["median_s"] - base, 3)
    print(f"  cli: {_summary(result)}", flush=True)
    return result


def bench_memory(files, size) -> dict:
    process = subprocess.Popen(
        [*UGRO, "--config", str(files[size]), "health", "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with PeakRss(process.pid) as peak:
        process.wait()
    result = {
        "nodes": size,
        "ugro_peak_rss_mib": round(peak.peak_self / 1024, 1),
        "ansible_peak_rss_mib": round(peak.peak_ansible / 1024, 1),
        "tree_peak_rss_mib": round(peak.peak_tree / 1024, 1),
    }
    print(f"  memory: {result}", flush=True)
    return result


def _summary(result: dict) -> str:
    return ", ".join(
        f"{k} {v['median_s']}s" if isinstance(v, dict) and "median_s" in v else f"{k} {v}"
        for k, v in result.items()
    )


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


SECTIONS = (
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
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="one repetition on 2 nodes")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--sizes", default="3,8,16,32")
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections, comma-separated")
    parser.add_argument("--keep", action="store_true", help="leave the bench sandbox up")
    parser.add_argument(
        "--sandbox",
        metavar="NAME",
        help="run on this sandbox, already up (the test suite's), instead of one of its own",
    )
    args = parser.parse_args(argv)
    sizes = [2] if args.smoke else sorted(int(s) for s in args.sizes.split(","))
    reps = 1 if args.smoke else args.reps
    only = set(args.only.split(","))
    if not only <= set(SECTIONS):
        parser.error(f"--only: expected some of {','.join(SECTIONS)}")
    workdir = Path(os.environ.get("UGRO_BENCH_DIR") or REPO / "bench" / "work")
    workdir.mkdir(parents=True, exist_ok=True)

    name = args.sandbox or SANDBOX
    fresh = layout.load(name) is None
    if fresh:
        if args.sandbox:
            sys.exit(f"no sandbox {name} is up")
        print(f"bringing up a {max(sizes)}-node sandbox ...", flush=True)
        lifecycle.up(
            SANDBOX,
            nodes=max(sizes),
            subnet=SUBNET,
            wheelhouse=os.environ.get("UGRO_WHEELHOUSE"),
            echo=lambda _l: None,
        )
    box = layout.load(name)
    assert box is not None
    if len(box.nodes) + 1 < max(sizes):
        sys.exit(
            f"the {name} sandbox has {len(box.nodes) + 1} nodes; `ugro sandbox down "
            f"--name {name}` and rerun"
        )
    files = cluster_files(box, sizes, workdir, smoke=args.smoke)
    if fresh and args.smoke:
        # Its own new sandbox, synced once: the smoke run's sections sync nothing themselves.
        subprocess.run(
            [*UGRO, "--config", str(files[max(sizes)]), "sync"], check=True, capture_output=True
        )
    report: dict = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "reps": reps,
        "sizes": sizes,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    # A run of some sections only gets a file of its own: it never overwrites a full run's.
    stem = "smoke" if args.smoke else datetime.now().strftime("%Y-%m-%d")
    if not args.smoke and only != set(SECTIONS):
        stem += "-" + "-".join(s for s in SECTIONS if s in only)
    path = RESULTS / f"{stem}.json"

    section_started = time.monotonic()

    def save() -> None:
        """After every section: a run that fails later keeps what it measured, and how long
        the section took."""
        nonlocal section_started
        took = round(time.monotonic() - section_started, 1)
        section = [key for key in report if key in SECTIONS][-1:]
        if section:
            report.setdefault("sections_s", {})[section[0]] = took
            print(f"  ({section[0]}: {took} s)", flush=True)
        section_started = time.monotonic()
        path.write_text(json.dumps(report, indent=2) + "\n")

    try:
        small = min(sizes)
        if "fanout" in only:
            seed_sizes = {min(sizes), 8} & set(sizes)
            report["fanout"] = bench_fanout(box, files, sizes, reps, seed_sizes, smoke=args.smoke)
            save()
        if "settings" in only:
            report["settings"] = bench_settings(
                files, 8 if 8 in sizes else small, reps, smoke=args.smoke
            )
            save()
        job = None
        launch_samples: dict = {}
        if "launch" in only:
            report["launch"] = bench_launch(box, files, small, reps, smoke=args.smoke)
            job = report["launch"]["job"]
            launch_samples = report["launch"].pop("samples")
            save()
        if "cli" in only:
            report["cli"] = bench_cli(files[small], job, reps if args.smoke else max(reps, 5))
            save()
        if "memory" in only:
            report["memory"] = bench_memory(files, max(sizes))
            save()
        if "recovery" in only:
            from bench.recovery import FAULTS, bench_recovery

            faults = ("rank_killed",) if args.smoke else FAULTS
            report["recovery"] = bench_recovery(box, files[small], faults, 1, smoke=args.smoke)
            save()
        if "daemon" in only:
            from bench.daemon import bench_daemon

            reused = (
                {name: runs[0] for name, runs in launch_samples.items()}
                if args.smoke and launch_samples
                else None
            )
            report["daemon"] = bench_daemon(box, files[small], workdir, small, reps, smoke=reused)
            save()
        if "dashboard" in only:
            from bench.dashboard import bench_dashboard

            report["dashboard"] = bench_dashboard(workdir, smoke=args.smoke)
            save()
        if "balance" in only:
            from bench.balance import bench_balance

            report["balance"] = bench_balance(box, files[small], reps, smoke=args.smoke)
            save()
        if "network" in only:
            from bench.balance import bench_network

            report["network"] = bench_network(box, files[small])
            save()
    finally:
        if not args.keep and not args.sandbox:
            lifecycle.down(SANDBOX, echo=lambda _l: None)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
