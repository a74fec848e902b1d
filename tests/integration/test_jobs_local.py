"""Jobs on a one-node cluster on this machine (no sandbox needed): real playbooks, real torchrun
with gloo on the CPU, tiny scripts. What the sandbox tests cover across hosts, these cover for
cluster.yaml's job settings and the CLI's paths to each verb."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import history_lines, run_ugro
from ugro.config import load_cluster_file
from ugro.records.history import Jobs

pytestmark = pytest.mark.slow

WRITE_AND_WAIT = """\
import os, sys, time
out = os.environ["UGRO_OUTPUT_DIR"]
with open(os.path.join(out, f"rank{os.environ['RANK']}.txt"), "w") as handle:
    handle.write(os.environ["TORCHELASTIC_RUN_ID"])
for i in range(int(sys.argv[1])):
    if len(sys.argv) > 2 and os.path.exists(sys.argv[2]):
        break  # released: the test has seen what it needs of the running job
    print(f"tick {i}", flush=True)
    time.sleep(0.5)
"""


def cluster_file(tmp_path: Path, **sections: dict) -> Path:
    data = {
        "cluster": {
            "name": "box",
            "master": {"hostname": "box", "ip": "127.0.0.1", "user": "root"},
            "communication": {"master_port": 29710},
        },
        "paths": {"project_root": str(tmp_path / "project")},
        "environment": {"manager": "system"},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def script(tmp_path: Path) -> Path:
    path = tmp_path / "write_and_wait.py"
    path.write_text(WRITE_AND_WAIT)
    return path


def job_id_from(output: str) -> str:
    return output.split("Launched ", 1)[1].split(" ", 1)[0]


def states(config: Path, job_id: str) -> list[str]:
    return [
        e["state"]
        for e in history_lines(Jobs(load_cluster_file(config)))
        if e["job_id"] == job_id and "state" in e
    ]


def test_a_static_rendezvous_and_a_separate_experiments_directory(tmp_path: Path) -> None:
    """communication.backend: static reaches torchrun, and with paths.experiments set, the
    master's ranks write straight into that directory (the one `ugro results` reads) while
    the job runs; nothing lands under the project's default data/experiments."""
    experiments = tmp_path / "results-disk" / "experiments"
    config = cluster_file(
        tmp_path,
        cluster={
            "name": "box",
            "master": {"hostname": "box", "ip": "127.0.0.1", "user": "root"},
            "communication": {"backend": "static", "master_port": 29711},
        },
        paths={"experiments": str(experiments)},
    )
    env = {"UGRO_CONFIG": str(config)}
    done = run_ugro(
        "launch", "--name", "st", "--detach", "--script", str(script(tmp_path)), "--", "40", env=env
    )
    assert done.returncode == 0, done.stderr
    job_id = job_id_from(done.stdout)
    written = experiments / job_id / "rank0.txt"
    deadline = time.monotonic() + 120
    while not written.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert written.read_text() == job_id  # torchrun's run id: the job's
    assert not (tmp_path / "project" / "data" / "experiments").exists()
    config_json = json.loads((experiments / job_id / "config.json").read_text())
    assert "static" in config_json["commands"]["box"]
    stopped = run_ugro("stop", "st", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert states(config, job_id) == ["launching", "running", "stopped"]


def test_ugro_run_takes_each_verbs_path(tmp_path: Path) -> None:
    config = cluster_file(tmp_path)
    env = {"UGRO_CONFIG": str(config)}
    # -e reaches the launch playbook: a templates directory that is not there fails it...
    broken = run_ugro(
        "run",
        "launch",
        "exp",
        "--check",
        "-e",
        f"ugro_launch_templates_dir={tmp_path / 'nowhere'}",
        env=env,
    )
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "launch.sh.j2" in broken.stderr
    fine = run_ugro("run", "launch", "exp", "--check", env=env)
    assert fine.returncode == 0, fine.stderr
    assert "nothing was started" in fine.stdout
    # ...but not what the launch decides itself.
    clash = run_ugro("run", "launch", "exp", "-e", "ugro_job_id=x_20260101_000000", env=env)
    assert clash.returncode == 2
    assert "ugro_job_id: set by the launch itself" in clash.stderr
    assert not (tmp_path / "project" / "data" / "experiments").exists()
    # `ugro run stop JOB` is `ugro stop JOB`: the history says stopped, as the user asked.
    done = run_ugro(
        "launch",
        "--name",
        "sleepy",
        "--detach",
        "--script",
        str(script(tmp_path)),
        "--",
        "600",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    job_id = job_id_from(done.stdout)
    stopped = run_ugro("run", "stop", "sleepy", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert "none of the job's processes is left" in stopped.stdout
    assert states(config, job_id) == ["launching", "running", "stopped"]
    assert run_ugro("run", "stop", env=env).returncode == 2  # a job playbook needs a JOB


def test_logs_follow_prints_the_job_as_it_runs_and_stops_with_it(tmp_path: Path) -> None:
    config = cluster_file(tmp_path)
    env = {"UGRO_CONFIG": str(config)}
    done = run_ugro(
        "launch",
        "--name",
        "ticker",
        "--detach",
        "--script",
        str(script(tmp_path)),
        "--",
        "6",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    job_id = job_id_from(done.stdout)
    follow = run_ugro("logs", "ticker", "--follow", env=env, timeout=300)
    assert follow.returncode == 0, follow.stderr
    assert [line for line in follow.stdout.splitlines() if "tick" in line] == [
        f"[box r0] tick {i}" for i in range(6)
    ]
    assert f"[{job_id} succeeded]" in follow.stderr
    assert states(config, job_id)[-1] == "succeeded"


def test_ctrl_c_detaches_from_a_followed_job_which_its_controller_keeps(tmp_path: Path) -> None:
    """ansible-runner takes over SIGINT for its runs; once the launch playbook is over, Ctrl-C
    must again interrupt the follower, which detaches, while the job goes on to succeed."""
    config = cluster_file(tmp_path)
    env = {**os.environ, "UGRO_CONFIG": str(config)}
    release = tmp_path / "release"
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ugro",
            "launch",
            "--name",
            "ctrlc",
            "--script",
            str(script(tmp_path)),
            "--",
            "600",  # running until released, however slow this machine is
            str(release),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a test run started in the background (`cmd &` in a script)
        # inherits SIGINT ignored, and ugro rightly keeps ignoring it then.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    jobs = Jobs(load_cluster_file(config))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = [r for r in jobs.records().values() if r.state == "running"]
        if running:
            break
        time.sleep(0.2)
    assert running, "the job never ran"
    time.sleep(1.0)
    assert jobs.find(running[0].job_id).state == "running"
    follower.send_signal(signal.SIGINT)
    out, err = follower.communicate(timeout=30)
    assert follower.returncode == 0, err[-2000:]
    assert "Detached from" in out and "Traceback" not in err
    job_id = running[0].job_id
    assert jobs.find(job_id).state == "running"  # the controller keeps it
    release.touch()
    deadline = time.monotonic() + 120
    while jobs.find(job_id).active and time.monotonic() < deadline:
        time.sleep(0.5)
    assert states(config, job_id) == ["launching", "running", "succeeded"]
