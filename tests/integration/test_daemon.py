"""The daemon on the sandbox: the queue, its placement, sweeps and cancels; health monitoring
with faults; and crash consistency under kill -9.

Each test has a project of its own (its cluster.yaml names the sandbox's nodes, its data
directory is the test's), so its daemon sees only its own jobs. Jobs run a tiny script (a
second of sleep under torchrun) so that what is measured is the queue, not training.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import history_lines, run_ugro
from tests.integration.jobkit import wait_for
from ugro.config import load_cluster_file
from ugro.records.history import Jobs
from ugro.records.states import FINAL_STATES

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

TINY = """\
import os, sys, time
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
print("rank", os.environ.get("RANK"), "done", flush=True)
"""
# The notification command: each event's environment, one JSON line per event.
NOTIFY = """\
import json, os, sys
keys = ("UGRO_EVENT", "UGRO_JOB_ID", "UGRO_JOB_STATE", "UGRO_NODE", "UGRO_REASON", "HF_TOKEN")
with open(sys.argv[1], "a") as handle:
    handle.write(json.dumps({k: os.environ.get(k) for k in keys}) + "\\n")
"""


@dataclass
class Project:
    config: Path
    script: Path
    notified: Path
    env: dict[str, str]

    def ugro(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run_ugro("--config", str(self.config), *args, env=self.env, timeout=timeout)

    def ok(self, *args: str) -> str:
        done = self.ugro(*args)
        assert done.returncode == 0, f"ugro {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    @property
    def jobs(self) -> Jobs:
        return Jobs(load_cluster_file(self.config))

    def submit(self, name: str, *args: str, sleep: float = 1.0) -> list[str]:
        out = self.ok(
            "submit", "--name", name, "--script", str(self.script), *args, "--", str(sleep)
        )
        return [line.split()[0] for line in out.splitlines() if line.endswith(" queued")]

    def events(self) -> list[dict]:
        if not self.notified.exists():
            return []
        return [json.loads(line) for line in self.notified.read_text().splitlines()]


@pytest.fixture
def project(sandbox, tmp_path: Path):
    document = yaml.safe_load(Path(sandbox.cluster_file).read_text())
    document["paths"] = {"project_root": str(tmp_path / "master")}
    document["daemon"] = {"probe_interval_seconds": 5, "deep_probe_interval_seconds": 3600}
    with socket.socket() as sock:  # the daemon's dashboard, on a port no other test holds
        sock.bind(("127.0.0.1", 0))
        document["dashboard"] = {"port": sock.getsockname()[1]}
    notified = tmp_path / "notified.jsonl"
    notify = tmp_path / "notify.py"
    notify.write_text(NOTIFY)
    document["notify"] = {"command": [sys.executable, str(notify), str(notified)]}
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump(document))
    script = tmp_path / "tiny.py"
    script.write_text(TINY)
    # A secret in the daemon's environment must never reach a notification.
    env = {"HF_TOKEN": "hf_secret_never_notified"}
    box = Project(config, script, notified, env)
    yield box
    box.ugro("daemon", "stop")
    for record in box.jobs.records().values():
        if not record.ended:
            box.ugro("stop", record.job_id)


def history_of(project: Project, job_id: str) -> list[dict]:
    return [e for e in history_lines(project.jobs) if e["job_id"] == job_id and "state" in e]


def at(entry: dict) -> float:
    from datetime import datetime

    return datetime.fromisoformat(entry["at"]).timestamp()


def all_ended(project: Project, job_ids: list[str]) -> bool:
    records = project.jobs.records()
    return all(records[j].ended for j in job_ids)


def test_the_queue_runs_jobs_in_order_on_their_nodes(project: Project) -> None:
    first = project.submit("all1")
    gpu1 = project.submit("one-gpu1", "--nodes", "gpu1")
    gpu2 = project.submit("one-gpu2", "--nodes", "gpu2")
    early_cancel = project.submit("cancel-queued", "--nodes", "gpu1")
    anyone = project.submit("any1", "--node-count", "1")
    long = project.submit("cancel-running", "--nodes", "gpu2", sleep=600)
    sweep = project.submit("sw", "--node-count", "1", "--sweep", "lr=1,2,3")
    last = project.submit("all2")
    job_ids = [*first, *gpu1, *gpu2, *early_cancel, *anyone, *long, *sweep, *last]
    assert len(job_ids) == 10
    assert [j.rsplit("_", 2)[0] for j in sweep] == ["sw_lr1", "sw_lr2", "sw_lr3"]

    # Without a daemon nothing starts, and the queue says so.
    queued = json.loads(project.ok("queue", "--json"))
    assert [q["job_id"] for q in queued["queued"]] == job_ids
    assert queued["queued"][0]["reason"].startswith("no daemon runs")
    out = project.ok("cancel", early_cancel[0])
    assert "cancelled (it had not started)" in out

    # A paused queue starts nothing, and says so.
    assert "paused" in project.ok("queue", "--pause")
    started = project.ok("daemon", "start")
    assert "The daemon runs (pid" in started
    again = project.ugro("daemon", "start")
    assert again.returncode == 0 and "a daemon already runs for" in again.stdout
    paused = wait_for(
        lambda: [
            q
            for q in json.loads(project.ok("queue", "--json"))["queued"]
            if q["job_id"] == first[0] and "paused" in q["reason"]
        ],
        30,
        "the head held by the pause",
    )
    # Once the nodes are probed (healthy: the head could start), it still waits.
    wait_for(
        lambda: json.loads(project.ok("daemon", "status", "--json"))["last_probe_at"],
        60,
        "the daemon's first probe",
    )
    assert project.jobs.find(first[0]).queued and paused
    project.ok("queue", "--resume")

    # The head holds every node (once the first probe found them healthy); the others wait,
    # each saying why.
    def reasons() -> dict[str, str]:
        return {
            q["job_id"]: q["reason"] for q in json.loads(project.ok("queue", "--json"))["queued"]
        }

    # The daemon may first deep-probe nodes whose torch facts it lacks (each reason then names
    # the probe): the head starts once they are free.
    waits = wait_for(
        lambda: (now := reasons()).get(gpu1[0]) == f"gpu1 busy with {first[0]}" and now,
        90,
        f"{gpu1[0]} waiting for {first[0]}",
    )
    assert waits[gpu2[0]] == f"gpu2 busy with {first[0]}"

    def running(job_id: str) -> bool:
        return project.jobs.find(job_id).state == "running"

    wait_for(lambda: running(long[0]), 240, f"{long[0]} running")
    out = project.ok("cancel", long[0])
    assert f"{long[0]} stopped" in out
    wait_for(lambda: all_ended(project, job_ids), 420, "every queued job ending")

    records = project.jobs.records()
    states = {j: records[j].state for j in job_ids}
    assert states.pop(early_cancel[0]) == "stopped"
    assert states.pop(long[0]) == "stopped"
    assert set(states.values()) == {"succeeded"}, states
    for job_id in job_ids:
        finals = [e for e in history_of(project, job_id) if e["state"] in FINAL_STATES]
        assert len(finals) == 1, (job_id, finals)
        starts = [e for e in history_of(project, job_id) if e["state"] == "launching"]
        assert len(starts) == (0 if job_id == early_cancel[0] else 1), job_id

    def span(job_id: str) -> tuple[float, float]:
        entries = history_of(project, job_id)
        begin = next(at(e) for e in entries if e["state"] == "launching")
        return begin, at(entries[-1])

    # Two 1-node jobs on different nodes ran at once.
    (a0, a1), (b0, b1) = span(gpu1[0]), span(gpu2[0])
    assert a0 < b1 and b0 < a1, "gpu1's and gpu2's jobs did not overlap"
    # First come, first served: the head first; the next on its nodes within 5 s of its end.
    head_end = span(first[0])[1]
    assert all(span(j)[0] >= head_end for j in job_ids if j not in (first[0], early_cancel[0]))
    assert min(a0, b0) - head_end <= 5.0
    # The last job needs every node: it cannot pass anyone.
    assert span(last[0])[0] >= max(span(j)[1] for j in job_ids[:-1] if j != early_cancel[0])
    assert records[anyone[0]].detail["nodes"] and len(records[anyone[0]].detail["nodes"]) == 1

    table = project.ok("results", "sw")
    for job_id in sweep:
        assert job_id in table
    assert "succeeded" in table and "lr" in table

    # One notification per job that ended while a daemon ran, once its controller was done
    # with it (the job cancelled before the first daemon started is history, not news); no
    # secret in any.
    noticed = [j for j in job_ids if j != early_cancel[0]]
    ended = wait_for(
        lambda: (
            (e := [x for x in project.events() if x["UGRO_EVENT"] == "job_ended"])
            and len(e) >= len(noticed)
            and e
        ),
        30,
        "a notification for every job",
    )
    assert sorted(e["UGRO_JOB_ID"] for e in ended) == sorted(noticed)
    assert {e["UGRO_JOB_STATE"] for e in ended if e["UGRO_JOB_ID"] == long[0]} == {"stopped"}
    assert all(e["HF_TOKEN"] is None for e in project.events())

    status = json.loads(project.ok("daemon", "status", "--json"))
    assert status["running"] and status["queued"] == 0
    # The daemon serves the dashboard; its API answers as the CLI does.
    with urllib.request.urlopen(status["dashboard"] + "api/queue", timeout=10) as response:
        assert json.load(response) == json.loads(project.ok("queue", "--json"))
    stopped = project.ok("daemon", "stop")
    assert f"The daemon (pid {status['pid']}) stopped" in stopped
    assert project.ugro("daemon", "status").returncode == 1


def test_health_monitoring_sees_a_node_go_down_and_come_back(sandbox, project: Project) -> None:
    project.ok("daemon", "start")
    history = load_cluster_file(project.config).paths.data / "health_history.jsonl"

    def samples(node: str) -> list[dict]:
        if not history.exists():
            return []
        return [
            json.loads(line)
            for line in history.read_text().splitlines()
            if json.loads(line)["node"] == node
        ]

    wait_for(lambda: samples("gpu2"), 30, "a first probe of gpu2")
    # With the daemon's verdicts fresh, `ugro health` answers from them at once.
    health = project.ok("health", "--json")
    assert json.loads(health)["source"] == "daemon"
    interval = 5.0
    faulted = time.time()
    done = run_ugro("sandbox", "fault", "gpu2", "down")
    assert done.returncode == 0, done.stderr
    try:
        down = wait_for(
            lambda: [s for s in samples("gpu2") if s["status"] == "down" and s["at"] >= faulted],
            4 * interval + 10,
            "gpu2 down in the history",
        )
        # Within two probe intervals of the fault (the probe's own SSH timeout aside).
        assert down[0]["at"] - faulted <= 2 * interval + 1
        unhealthy = project.ugro("health")
        assert unhealthy.returncode == 1 and "down" in unhealthy.stdout
    finally:
        assert run_ugro("sandbox", "fault", "gpu2", "up").returncode == 0
    back = time.time()
    wait_for(
        lambda: [s for s in samples("gpu2") if s["status"] == "up" and s["at"] >= back],
        4 * interval + 10,
        "gpu2 up again in the history",
    )
    # A node that comes back is probed deeply (torch imported), as it is idle.
    wait_for(
        lambda: [s for s in samples("gpu2") if s["kind"] == "deep" and s["at"] >= back],
        120,
        "a deep probe of gpu2 after it came back",
    )
    changes = project.ok("health", "--history", "--node", "gpu2")
    assert "up -> down" in changes and "down -> up" in changes
    events = [e["UGRO_EVENT"] for e in project.events() if e["UGRO_NODE"] == "gpu2"]
    assert events[:2] == ["node_down", "node_up"]


def test_kill_9_of_the_daemon_loses_and_duplicates_nothing(project: Project) -> None:
    """20 lifetimes of the daemon, each ended by SIGKILL at a random moment, over a queue of
    small jobs: each job starts once, ends once, and none is forgotten."""
    job_ids = []
    for index, node in enumerate(["gpu1", "gpu2", "gpu-master", "gpu1", "gpu2", "gpu-master"]):
        job_ids += project.submit(f"crash{index}", "--nodes", node, sleep=2)
    rng = random.Random(1234)  # noqa: S311 - a repeatable test, not a secret
    argv = [sys.executable, "-m", "ugro.daemon", "--config", str(project.config)]
    for _ in range(20):
        daemon = subprocess.Popen(
            argv,
            env={**os.environ, **project.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        # A daemon does its work in its first second (it locks, reads the history, dispatches,
        # writes its state): kill points up to 1.5 s cover it, and later ones repeat it.
        time.sleep(rng.uniform(0.2, 1.5))
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
    project.ok("daemon", "start")
    wait_for(lambda: all_ended(project, job_ids), 300, "every job ending after the crashes")
    records = project.jobs.records()
    for job_id in job_ids:
        entries = history_of(project, job_id)
        states = [(e.get("attempt", 1), e["state"]) for e in entries]
        assert states == [(1, "queued"), (1, "launching"), (1, "running"), (1, "succeeded")], (
            job_id,
            states,
        )
        assert records[job_id].state == "succeeded"
    # Every job's end notified, though the daemon died 20 times (at least once: a daemon
    # killed between a notification and writing its cursor tells it again).
    ended = wait_for(
        lambda: (
            len({e["UGRO_JOB_ID"] for e in project.events()}) >= len(job_ids) and project.events()
        ),
        30,
        "notifications",
    )
    assert {e["UGRO_JOB_ID"] for e in ended if e["UGRO_EVENT"] == "job_ended"} == set(job_ids)
