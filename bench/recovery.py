"""Recovery timelines: a fault in the middle of training, and how long until it trains again.

For each fault, two contenders on the same nodes with the same training (train_production.py,
checkpoints every few steps, resumed from the newest complete one):

  ugro       `ugro launch --retries 1`: the job's controller detects the fault, tears the job
             down, and starts attempt 2 from the last checkpoint
  torchrun   the same torchrun commands started by hand over ssh with `--max-restarts 3`:
             torchrun's own elastic restart (the workers restarted in place, `--resume auto`;
             every agent spends a restart on each failure it sees, so one is seldom enough)

Figures (seconds from the fault): detected (ugro: the controller knew), down (ugro: every process
of the attempt ended on every node), relaunched (ugro: attempt 2 running), trains again (a rank
completed a step past the checkpoint it resumed from). A contender that does not train again
within CAP_S is reported as such.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
UGRO = [sys.executable, "-m", "ugro"]
sys.path.insert(0, str(REPO))
from ugro.records.controller_files import ControllerHandle  # noqa: E402
from ugro.records.history import Jobs  # noqa: E402
from ugro.sandbox import faults, layout  # noqa: E402

CAP_S = 120.0
# The smoke run (CI) shows the torchrun contender runs: its wait for a restart is short.
SMOKE_CAP_S = 1.0
TORCHRUN_RESTARTS = 3
SAVE_EVERY = 5
SMOKE_SAVE_EVERY = 2


def training(save_every: int) -> list[str]:
    return [
        "--",
        "--max-steps",
        "2000",
        "--logging-steps",
        str(save_every),
        "--eval-strategy",
        "no",
        "--save-strategy",
        "steps",
        "--save-steps",
        str(save_every),
    ]


FAULTS = ("rank_killed", "agent_killed", "rank_stopped", "node_partitioned", "node_down")

# Signals one process of a job on a node (over ssh, or here for the master): a rank or the
# agent, found in this PID namespace by a marker in its environment or command line.
SIGNAL_ONE = """\
import os, sys
marker, role, number = sys.argv[1].encode(), sys.argv[2], int(sys.argv[3])
here = os.readlink("/proc/self/ns/pid")
for entry in os.listdir("/proc"):
    if not entry.isdigit() or int(entry) == os.getpid():
        continue
    try:
        if os.readlink(f"/proc/{entry}/ns/pid") != here:
            continue
        environ = open(f"/proc/{entry}/environ", "rb").read()
        cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
    except OSError:
        continue
    if marker not in environ + cmdline or b"ugro_rank.py" not in cmdline:
        continue
    if (role == "agent") == (b"torch.distributed.run" in cmdline):
        os.kill(int(entry), number)
        print(entry)
        break
"""


def _on_node(box: layout.Sandbox, node: str, *argv: str) -> subprocess.CompletedProcess[str]:
    if node == layout.MASTER_NAME:
        return subprocess.run(list(argv), capture_output=True, text=True, check=False)
    plan = box.node(node)
    return subprocess.run(
        box.ssh_argv(plan, list(argv)), capture_output=True, text=True, timeout=30, check=False
    )


def _signal(box: layout.Sandbox, node: str, marker: str, role: str, number: int) -> None:
    python = sys.executable if node == layout.MASTER_NAME else "python3"
    done = _on_node(box, node, python, "-c", SIGNAL_ONE, marker, role, str(number))
    if not done.stdout.strip():
        raise RuntimeError(f"no {role} of {marker} on {node}: {done.stderr[-500:]}")


def inject(box: layout.Sandbox, fault: str, marker: str) -> None:
    if fault == "rank_killed":
        _signal(box, "gpu1", marker, "rank", signal.SIGKILL)
    elif fault == "agent_killed":
        _signal(box, "gpu1", marker, "agent", signal.SIGKILL)
    elif fault == "rank_stopped":
        _signal(box, "gpu1", marker, "rank", signal.SIGSTOP)
    elif fault == "node_partitioned":
        faults.fault(box.name, "gpu2", "partition")
    elif fault == "node_down":
        faults.fault(box.name, "gpu2", "down")


def repair(box: layout.Sandbox, fault: str) -> None:
    """What a user's desktop does on its own a little later: the link returns, it boots."""
    if fault == "node_partitioned":
        faults.fault(box.name, "gpu2", "heal")
    elif fault == "node_down":
        faults.fault(box.name, "gpu2", "up")


def _wait(condition, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    return None


def ugro_timeline(
    box: layout.Sandbox, config: Path, fault: str, name: str, save_every: int = SAVE_EVERY
) -> dict[str, Any]:
    hang = ["--hang-timeout", "15"] if fault == "rank_stopped" else []
    done = subprocess.run(
        [
            *UGRO,
            "--config",
            str(config),
            "launch",
            "--name",
            name,
            "--retries",
            "1",
            "--detach",
            *hang,
            *training(save_every),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    job_id = done.stdout.split("Launched ", 1)[1].split(" ", 1)[0]
    from ugro.config import load_cluster_file

    cluster = load_cluster_file(config)
    jobs = Jobs(cluster)
    controller = ControllerHandle(jobs.experiment_dir(job_id))

    def steps(attempt: int) -> dict[str, int] | None:
        """Every rank's last step in `attempt` (one rank per node here), once all have one."""
        state = controller.state()
        found = dict(state.steps)
        return found if state.attempt == attempt and len(found) == len(cluster.nodes) else None

    directory = jobs.experiment_dir(job_id)
    try:
        _wait(lambda: (s := steps(1)) and min(s.values()) >= save_every + 2, 300)
        fault_at = time.time()
        inject(box, fault, job_id)
        ended = _wait(
            lambda: next(
                (
                    e
                    for e in (line.to_json() for line in jobs.history())
                    if e["job_id"] == job_id and e.get("attempt") == 1 and "timeline" in e
                ),
                None,
            ),
            CAP_S,
        )
        if ended is None:
            return {
                "trains_again": None,
                "note": f"no verdict within {CAP_S:.0f}s",
                "job_dir": str(directory),
            }
        repair(box, fault)
        relaunched = _wait(
            lambda: jobs.find(job_id).attempt == 2 and jobs.find(job_id).state == "running", CAP_S
        )
        relaunched_at = time.time() if relaunched else None
        first = _wait(lambda: steps(2), CAP_S)
        resumed_from = min(first.values()) if first else None
        again = _wait(
            lambda: (s := steps(2)) and resumed_from is not None and max(s.values()) > resumed_from,
            CAP_S,
        )
        timeline = ended["timeline"]
        return {
            "detected": round(timeline["detected"] - fault_at, 2),
            "down": round(timeline["down"] - fault_at, 2),
            "relaunched": round(relaunched_at - fault_at, 2) if relaunched_at else None,
            "trains_again": round(time.time() - fault_at, 2) if again else None,
            "cause": (ended.get("failure") or {}).get("cause"),
            "job_dir": str(directory),
        }
    finally:
        repair(box, fault)
        subprocess.run(
            [*UGRO, "--config", str(config), "stop", job_id], capture_output=True, check=False
        )


def torchrun_timeline(
    box: layout.Sandbox,
    fault: str,
    job_dir: Path,
    port: int,
    cap_s: float = CAP_S,
    save_every: int = SAVE_EVERY,
) -> dict[str, Any]:
    """The job's own torchrun commands, by hand over ssh, with torchrun's own restarts
    (--max-restarts TORCHRUN_RESTARTS) and the script resuming from its newest checkpoint."""
    job = json.loads((job_dir / "config.json").read_text())
    marker = f"{job['job_id']}-byhand"
    processes = []
    for node, original in job["commands"].items():
        command = list(original)
        for index, value in enumerate(command[:-1]):
            if value == "--rdzv-id":
                command[index + 1] = marker
            elif value == "--max-restarts":
                command[index + 1] = str(TORCHRUN_RESTARTS)
            elif value == "--log-dir":
                command[index + 1] = command[index + 1].replace(job["job_id"], marker)
            elif value == "--rdzv-endpoint":
                command[index + 1] = re.sub(r":\d+$", f":{port}", command[index + 1])
        out = str(Path(command[command.index("--log-dir") + 1]).parent)
        command += ["--resume", "auto", "--output-dir", out]
        master = node == layout.MASTER_NAME
        env = [
            "env",
            "OMP_NUM_THREADS=1",
            f"UGRO_NODE={node}",
            f"UGRO_PRIMARY={1 if master else 0}",
            f"GLOO_SOCKET_IFNAME={box.bridge if master else 'eth0'}",
        ]
        argv = [*env, *command] if master else box.ssh_argv(box.node(node), [*env, *command])
        master_out = Path(str(job_dir) + "-byhand")
        master_out.mkdir(exist_ok=True)
        with open(master_out / f"{node}.agent.log", "ab") as agent_log:
            processes.append(subprocess.Popen(argv, stdout=agent_log, stderr=agent_log))
    progress = master_out / "logs" / f"{layout.MASTER_NAME}.rank0.progress"

    def step(since: float = 0.0) -> int | None:
        """Rank 0's last step, if it was written after `since` (a unix time)."""
        try:
            beat = json.loads(progress.read_text())
            return int(beat["step"]) if float(beat["at"]) >= since else None
        except (OSError, ValueError, KeyError):
            return None

    def starts() -> int:
        """How often rank 0 has started (train_production.py logs its settings each time)."""
        try:
            return (
                (progress.parent / f"{layout.MASTER_NAME}.rank0.log")
                .read_text()
                .count(" settings: ")
            )
        except OSError:
            return 0

    try:
        if _wait(lambda: (s := step()) is not None and s >= save_every + 2, 300) is None:
            return {"trains_again": None, "note": "never trained"}
        fault_at = time.time()
        first_starts = starts()
        inject(box, fault, marker)
        repaired = False
        resumed: int | None = None
        restarted_at: float | None = None
        deadline = time.monotonic() + cap_s
        while time.monotonic() < deadline:
            if not repaired and time.time() - fault_at > 15:
                repair(box, fault)
                repaired = True
            if restarted_at is None and starts() > first_starts:
                restarted_at = time.time()
            if restarted_at is not None:
                now = step(since=restarted_at)
                # The restarted rank beats once at the step it resumed from, then per step.
                resumed = now if resumed is None else resumed
                if now is not None and resumed is not None and now > resumed:
                    return {"trains_again": round(time.time() - fault_at, 2)}
            time.sleep(0.1)
        return {"trains_again": None, "note": f"not training again within {cap_s:.0f}s"}
    finally:
        repair(box, fault)
        for process in processes:
            process.kill()
        sweep = SIGNAL_ONE.replace("        break\n", "")
        for node in job["commands"]:
            python = sys.executable if node == layout.MASTER_NAME else "python3"
            for role in ("agent", "rank"):
                _on_node(box, node, python, "-c", sweep, marker, role, "9")


def bench_recovery(
    box: layout.Sandbox, config: Path, faults: tuple[str, ...], reps: int, *, smoke: bool = False
) -> dict:
    """Each fault's timeline for both contenders (medians over reps where both recovered)."""
    result: dict[str, Any] = {}
    stamp = time.strftime("%H%M%S")
    for number, fault in enumerate(faults):
        runs: dict[str, list[dict[str, Any]]] = {"ugro": [], "torchrun": []}
        for rep in range(reps):
            save_every = SMOKE_SAVE_EVERY if smoke else SAVE_EVERY
            ugro = ugro_timeline(box, config, fault, f"rec{stamp}f{number}r{rep}", save_every)
            runs["ugro"].append(ugro)
            runs["torchrun"].append(
                torchrun_timeline(
                    box,
                    fault,
                    Path(ugro.pop("job_dir")),
                    29850 + number * 10 + rep,
                    SMOKE_CAP_S if smoke else CAP_S,
                    save_every,
                )
            )
        result[fault] = {name: _median(samples) for name, samples in runs.items()}
        print(f"  recovery {fault}: {result[fault]}", flush=True)
    return result


def _median(samples: list[dict[str, Any]]) -> dict[str, Any]:
    import statistics

    merged: dict[str, Any] = {}
    for key in samples[0]:
        values = [s.get(key) for s in samples]
        numbers = [v for v in values if isinstance(v, (int, float))]
        if len(numbers) == len(values):
            merged[key] = round(statistics.median(numbers), 2)
        else:
            merged[key] = values[0] if len(set(map(str, values))) == 1 else values
    return merged
