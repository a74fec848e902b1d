"""Helpers for tests that run jobs on the sandbox and inject faults into them.

Faults reach a node's processes only as they would on real machines: over SSH as the node's
user (the master's own here, where ugro runs), found by the job's tag in that node's PID
namespace.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import history_lines, run_ugro
from tests.integration.conftest import ssh_as
from ugro.config import load_cluster_file
from ugro.records.controller_files import ControllerHandle
from ugro.records.history import Jobs
from ugro.records.states import FINAL_STATES

# A job of ugro_rank.py-wrapped ranks that tick once a second and beat their progress.
BEATING = """\
import json, os, time
for step in range(1, 3600):
    print(f"rank {os.environ['RANK']} attempt {os.environ['UGRO_ATTEMPT']} step {step}", flush=True)
    path = os.environ["UGRO_PROGRESS_FILE"]
    with open(path + ".tmp", "w") as handle:
        json.dump({"step": step, "at": time.time()}, handle)
    os.replace(path + ".tmp", path)
    time.sleep(1)
"""

# Run on a node (over SSH as its user, or here for the master): signal one of the job's
# processes in this PID namespace, the torchrun agent or a rank; print its pid.
SIGNAL_ONE = """\
import os, sys
job, role, number = sys.argv[1], sys.argv[2], int(sys.argv[3])
here = os.readlink("/proc/self/ns/pid")
for entry in os.listdir("/proc"):
    if not entry.isdigit():
        continue
    try:
        if os.readlink(f"/proc/{entry}/ns/pid") != here:
            continue
        environ = open(f"/proc/{entry}/environ", "rb").read().split(b"\\0")
        cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
    except OSError:
        continue
    if f"UGRO_JOB_ID={job}".encode() not in environ or b"ugro_rank.py" not in cmdline:
        continue
    if (role == "agent") == (b"torch.distributed.run" in cmdline):
        os.kill(int(entry), number)
        print(entry)
        break
"""

# Run on a node: the pids in this PID namespace carrying the job's tag, as JSON.
TAGGED = """\
import json, os, sys
needle = ("UGRO_JOB_ID=" + sys.argv[1]).encode()
here = os.readlink("/proc/self/ns/pid")
found = []
for entry in os.listdir("/proc"):
    if entry.isdigit() and int(entry) != os.getpid():
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") == here and needle in open(
                f"/proc/{entry}/environ", "rb"
            ).read().split(b"\\0"):
                found.append(int(entry))
        except OSError:
            pass
print(json.dumps(found))
"""


# Run on a node: a process tagged with a job that no longer runs, detached from the SSH session.
GHOST = """\
import os, subprocess
subprocess.Popen(
    ["sleep", "600"],
    env={**os.environ, "UGRO_JOB_ID": "ghost_20200101_000000"},
    stdin=subprocess.DEVNULL,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
    start_new_session=True,
)
"""


def jobs_of(sandbox) -> Jobs:
    return Jobs(load_cluster_file(sandbox.cluster_file))


def on_node(sandbox, node: str, program: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A Python program on a node: over SSH as its user, or here for the master."""
    if node == "gpu-master":
        return subprocess.run(
            [sys.executable, "-c", program, *args], capture_output=True, text=True, check=False
        )
    return ssh_as(sandbox, sandbox.node(node), "python3", "-c", program, *args)


def signal_one(sandbox, node: str, job_id: str, role: str, number: int) -> int:
    done = on_node(sandbox, node, SIGNAL_ONE, job_id, role, str(number))
    assert done.returncode == 0 and done.stdout.strip(), done.stderr
    return int(done.stdout.strip())


def tagged_everywhere(sandbox, job_id: str) -> dict[str, list[int]]:
    found = {}
    for node in ("gpu-master", *(n.name for n in sandbox.nodes)):
        done = on_node(sandbox, node, TAGGED, job_id)
        assert done.returncode == 0, f"{node}: {done.stderr}"
        found[node] = json.loads(done.stdout)
    return found


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


def launch(env, name: str, script: Path, *args: str) -> str:
    done = run_ugro("launch", "--name", name, "--script", str(script), "--detach", *args, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout.split("Launched ", 1)[1].split(" ", 1)[0]


def wait_running(sandbox, job_id: str, steps: int = 2) -> None:
    """Until every rank has beaten `steps` times (the controller's own view)."""
    watcher = ControllerHandle(jobs_of(sandbox).experiment_dir(job_id))

    def beating() -> bool:
        seen = dict(watcher.state().steps)
        return len(seen) == 3 and min(seen.values()) >= steps

    wait_for(beating, 120, f"{job_id} running on 3 nodes")


def final(sandbox, job_id: str, timeout: float = 120) -> Any:
    jobs = jobs_of(sandbox)
    watcher = ControllerHandle(jobs.experiment_dir(job_id))

    def ended() -> Any:
        record = jobs.find(job_id)
        done = not record.active and watcher.state().past_retries
        return record if done else None

    return wait_for(ended, timeout, f"{job_id} ending")


def finals_of(sandbox, job_id: str) -> list[tuple[int, str]]:
    return [
        (e.get("attempt", 1), e["state"])
        for e in history_lines(jobs_of(sandbox))
        if e["job_id"] == job_id and e.get("state") in FINAL_STATES
    ]


def assert_nothing_left(sandbox, job_id: str) -> None:
    assert tagged_everywhere(sandbox, job_id) == {
        "gpu-master": [],
        **{n.name: [] for n in sandbox.nodes},
    }
