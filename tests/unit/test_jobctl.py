"""The node-side job control (roles/ugro_job/files/jobctl.py) against a real torchrun job on
this machine: two ranks through scripts/ugro_rank.py, tagged as a launch tags them."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from ugro.nodes import scripts

PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}_[0-9]{8}_[0-9]{6}$"

jobctl = scripts.load(scripts.JOBCTL, "jobctl")

BEATING = """\
import json, os, sys, time
for step in range(1, 100000):
    path = os.environ["UGRO_PROGRESS_FILE"]
    with open(path + ".tmp", "w") as handle:
        json.dump({"step": step, "at": time.time()}, handle)
    os.replace(path + ".tmp", path)
    time.sleep(0.2)
"""


def wait_for(condition: Callable[[], object], timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not true within {timeout}s: {condition}")


@pytest.fixture
def job(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    job_id = f"ctl{os.getpid()}_20260101_000000"
    job_dir = tmp_path / job_id
    (job_dir / "logs").mkdir(parents=True)
    script = tmp_path / "beating.py"
    script.write_text(BEATING)
    env = {**os.environ, "UGRO_JOB_ID": job_id, "UGRO_NODE": "here", "OMP_NUM_THREADS": "1"}
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(REPO / "scripts" / "ugro_rank.py"),
            "--log-dir",
            str(job_dir / "logs"),
            "--",
            str(script),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    (job_dir / "pid").write_text(f"{agent.pid}\n")
    try:
        yield job_id, job_dir, agent
    finally:
        jobctl.stop(job_id, 2.0)
        agent.wait(timeout=30)


def ranks_of(snapshot: dict) -> dict[int, int]:
    return {p["rank"]: p["pid"] for p in snapshot["processes"] if p["role"] == "rank"}


def test_a_snapshot_sees_the_agent_its_ranks_and_their_progress(job) -> None:
    job_id, job_dir, agent = job
    snapshot = wait_for(
        lambda: (
            (s := jobctl.snapshot(job_id, str(job_dir), 5))["progress"].keys() >= {"0", "1"} and s
        )
    )
    assert isinstance(snapshot, dict)
    roles = sorted(p["role"] for p in snapshot["processes"])
    assert roles == ["agent", "rank", "rank"]
    assert [p["pid"] for p in snapshot["processes"] if p["role"] == "agent"] == [agent.pid]
    assert set(ranks_of(snapshot)) == {0, 1}
    assert snapshot["supervisor"] == {"pid": agent.pid, "alive": True, "exit_code": None}
    assert all(beat["step"] >= 1 and beat["age"] < 5 for beat in snapshot["progress"].values())


def test_a_killed_rank_leaves_no_exit_code_and_its_sibling_exits_143(job) -> None:
    job_id, job_dir, _agent = job
    snapshot = wait_for(
        lambda: len(ranks_of(s := jobctl.snapshot(job_id, str(job_dir), 5))) == 2 and s
    )
    assert isinstance(snapshot, dict)
    victim = ranks_of(snapshot)[1]
    os.kill(victim, signal.SIGKILL)
    exits = wait_for(lambda: jobctl.rank_exits(str(job_dir), 5).get(0))
    assert isinstance(exits, dict)
    # torchrun ends the surviving rank with SIGTERM: ugro_rank.py records 143 for it, the
    # consequence; the killed rank, the cause, has no exit code at all.
    assert exits["exit_code"] == 143
    assert 1 not in jobctl.rank_exits(str(job_dir), 5)


def test_stop_ends_every_tagged_process_and_checks(job) -> None:
    job_id, job_dir, agent = job
    wait_for(lambda: len(jobctl.job_processes(job_id)) >= 3)
    report = jobctl.stop(job_id, 5.0)
    assert report["signalled"] >= 3 and report["left"] == []
    assert jobctl.job_processes(job_id) == []
    agent.wait(timeout=10)
    assert jobctl.state(job_id, str(job_dir), 5)["running"] is False


def start_watch(tmp_path: Path, job_id: str, job_dir: Path, interval: float) -> subprocess.Popen:
    """`jobctl watch` as a job carries it: code/ugro_jobctl.py beside the process reader it
    imports, its stdin the master's end of the ssh connection."""
    code = tmp_path / "code"
    code.mkdir()
    shutil.copy(scripts.JOBCTL.file, code / "ugro_jobctl.py")
    for helper in scripts.JOBCTL.helper_files():
        shutil.copy(helper, code / helper.name)
    return subprocess.Popen(
        [
            sys.executable,
            str(code / "ugro_jobctl.py"),
            "watch",
            "--job-id",
            job_id,
            "--job-id-pattern",
            PATTERN,
            "--job-dir",
            str(job_dir),
            "--interval",
            str(interval),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


def test_watch_beats_until_the_master_hangs_up(job, tmp_path: Path) -> None:
    job_id, job_dir, _agent = job
    watcher = start_watch(tmp_path, job_id, job_dir, 0.2)
    assert watcher.stdout is not None and watcher.stdin is not None
    beats = [json.loads(watcher.stdout.readline()) for _ in range(3)]
    assert all(b["beat"] and b["job_id"] == job_id for b in beats)
    watcher.stdin.close()  # what sshd does when the connection goes
    assert watcher.wait(timeout=5) == 0


def test_watch_beats_at_once_when_the_supervisor_ends(tmp_path: Path) -> None:
    job_id = "quick_20260101_000000"
    job_dir = tmp_path / job_id
    job_dir.mkdir()
    supervisor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    (job_dir / "pid").write_text(str(supervisor.pid))
    watcher = start_watch(tmp_path, job_id, job_dir, 30)
    assert watcher.stdout is not None and watcher.stdin is not None
    try:
        assert json.loads(watcher.stdout.readline())["supervisor"]["alive"] is True
        supervisor.kill()
        supervisor.wait()
        ended_at = time.monotonic()
        # The next beat comes at once (within a second on an idle machine), not 30 s later:
        # the bound leaves room for a loaded one.
        readable, _, _ = select.select([watcher.stdout], [], [], 15)
        assert readable, "no beat within 15 s of the supervisor's end"
        assert json.loads(watcher.stdout.readline())["supervisor"]["alive"] is False
        assert time.monotonic() - ended_at < 15
    finally:
        watcher.stdin.close()
        assert watcher.wait(timeout=5) == 0


def test_sweep_finds_every_job_and_kills_with_kill(job) -> None:
    job_id, _job_dir, _agent = job
    wait_for(lambda: len(jobctl.job_processes(job_id)) >= 3)
    listed = jobctl.sweep(PATTERN, False, 5.0)
    assert len(listed["jobs"][job_id]) >= 3 and "signalled" not in listed
    swept = jobctl.sweep(PATTERN, True, 5.0)
    assert swept["left"] == [] and jobctl.job_processes(job_id) == []


def test_another_pid_namespace_is_out_of_reach(tmp_path: Path) -> None:
    """As a sandbox node's processes are to the master: tagged, but in a PID namespace of
    their own, they are never found (nor signalled) from here."""
    if os.geteuid() != 0:
        pytest.skip("unshare --pid needs root")
    job_id = f"far{os.getpid()}_20260101_000000"
    inside = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "sleep", "60"],
        env={**os.environ, "UGRO_JOB_ID": job_id},
        start_new_session=True,
    )
    try:
        # The sleep is there, tagged, as the host sees it...
        def tagged_sleep() -> int | None:
            for entry in Path("/proc").iterdir():
                try:
                    found = entry.name.isdigit() and (entry / "comm").read_text().strip() == "sleep"
                    if (
                        found
                        and f"UGRO_JOB_ID={job_id}".encode() in (entry / "environ").read_bytes()
                    ):
                        return int(entry.name)
                except OSError:
                    continue
            return None

        sleeper = wait_for(tagged_sleep, timeout=10)
        # ...but not to the job control, which only looks in its own PID namespace (unshare
        # itself, tagged too, runs in this one: a sandbox's runs untagged, under sshd).
        seen = {p["pid"] for p in jobctl.job_processes(job_id)}
        assert sleeper not in seen and seen <= {inside.pid}
        assert sleeper not in jobctl.sweep(PATTERN, False, 1.0)["jobs"].get(job_id, [])
    finally:
        inside.kill()
        inside.wait(timeout=10)


# A stand-in for nvidia-smi (no GPU on this machine): it lists the pids in $FAKE_GPU_PIDS as
# holding GPU memory for the first $FAKE_GPU_CALLS calls, then none, as a driver freeing the
# memory of a killed process a little later does.
FAKE_NVIDIA_SMI = """\
#!/bin/sh
calls=$(cat "$FAKE_GPU_COUNTER" 2>/dev/null || echo 0)
echo $((calls + 1)) > "$FAKE_GPU_COUNTER"
if [ "$calls" -lt "$FAKE_GPU_CALLS" ]; then
  for pid in $FAKE_GPU_PIDS; do echo "$pid"; done
fi
"""


@pytest.mark.parametrize(("calls", "held"), [(2, False), (10_000, True)])
def test_a_stop_waits_for_gpu_memory_and_says_what_a_gpu_still_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, calls: int, held: bool
) -> None:
    job_id = f"gpu{os.getpid()}_20260101_000000"
    sleeper = subprocess.Popen(
        ["sleep", "60"], env={**os.environ, "UGRO_JOB_ID": job_id}, start_new_session=True
    )
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text(FAKE_NVIDIA_SMI)
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GPU_PIDS", str(sleeper.pid))
    monkeypatch.setenv("FAKE_GPU_CALLS", str(calls))
    monkeypatch.setenv("FAKE_GPU_COUNTER", str(tmp_path / "calls"))
    # The wait lives with the node's process helpers (ugro_jobprocs), which jobctl imports.
    monkeypatch.setattr(sys.modules[jobctl.stop_pids.__module__], "GPU_RELEASE_WAIT_S", 2.0)
    try:
        wait_for(lambda: jobctl.job_processes(job_id), timeout=10)
        report = jobctl.stop(job_id, 2.0)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert report["left"] == [] and report["gpu_checked"] is True
    assert report["gpu_held"] == ([sleeper.pid] if held else [])
    assert int((tmp_path / "calls").read_text()) >= 2  # it asked again until released
