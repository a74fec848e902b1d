"""The launch role's start program (roles/ugro_launch/module_utils/ugro_start.py), run as a
script for real here; its module runs in the launch tests and the role's molecule scenario."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO

PROGRAM = REPO / "roles" / "ugro_launch" / "module_utils" / "ugro_start.py"
SUPERVISOR = 'echo "$$" > pid.tmp && mv pid.tmp pid\necho ran > ran\n'


def start(request: dict) -> tuple[int, dict, str]:
    done = subprocess.run(
        [sys.executable, str(PROGRAM)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, json.loads(done.stdout), done.stderr


def request(job_dir: Path, supervisor: str = SUPERVISOR, **extra: object) -> dict:
    return {
        "job_dir": str(job_dir),
        "files": [
            {"name": "code/scripts/train.py", "content": "print('hi')\n", "mode": "0640"},
            {"name": "supervise.sh", "content": supervisor, "mode": "0750", "check": "bash"},
        ],
        "start": "supervise.sh",
        "pid_timeout": 10,
        **extra,
    }


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_writes_the_files_and_starts_the_supervisor(tmp_path: Path) -> None:
    job = tmp_path / "data" / "experiments" / "exp1_20261129_101010"
    rc, result, _ = start(request(job))
    assert rc == 0 and result["changed"] is True
    assert result["pid"] == int((job / "pid").read_text())
    wait_for(job / "ran")
    assert (job / "ran").read_text() == "ran\n"
    assert (job / "supervise.sh").stat().st_mode & 0o777 == 0o750
    assert (job / "code" / "scripts" / "train.py").stat().st_mode & 0o777 == 0o640
    assert (job / "code" / "scripts" / "train.py").read_text() == "print('hi')\n"
    assert job.stat().st_mode & 0o777 == 0o750 and (job / "logs").is_dir()
    assert not list(job.rglob(".*")), "no temporary file may stay behind"


def test_a_script_that_does_not_parse_starts_nothing(tmp_path: Path) -> None:
    job = tmp_path / "job"
    rc, result, stderr = start(request(job, supervisor="if then fi (\n"))
    assert rc == 1 and result["failed"] is True
    assert result["msg"].startswith("supervise.sh does not parse:")
    assert stderr.strip() == result["msg"]
    assert not (job / "supervise.sh").exists() and not (job / "pid").exists()


def test_a_started_job_is_not_started_twice(tmp_path: Path) -> None:
    job = tmp_path / "job"
    assert start(request(job))[0] == 0
    wait_for(job / "ran")
    (job / "ran").unlink()
    rc, result, _ = start(request(job))
    assert rc == 1 and "already holds a started job" in result["msg"]
    time.sleep(0.3)
    assert not (job / "ran").exists()


def test_check_mode_checks_the_scripts_and_writes_nothing(tmp_path: Path) -> None:
    job = tmp_path / "job"
    rc, result, _ = start(request(job, check_mode=True))
    assert rc == 0 and result == {
        "changed": False,
        "pid": None,
        "checked": ["code/scripts/train.py", "supervise.sh"],
    }
    assert not job.exists()
    rc, result, _ = start(request(job, supervisor="fi\n", check_mode=True))
    assert rc == 1 and "does not parse" in result["msg"]


def test_bad_requests_are_one_line(tmp_path: Path) -> None:
    rc, result, _ = start({"job_dir": str(tmp_path)})
    assert rc == 1 and result["msg"].startswith("malformed start request:")
    for name in ("../escape.py", "code/../../escape.py", "/tmp/escape.py", "code//x.py", ""):
        hostile = request(tmp_path / "job")
        hostile["files"][0]["name"] = name
        rc, result, _ = start(hostile)
        assert rc == 1 and result["msg"] == f"not a file name inside the job directory: {name!r}"
    assert not (tmp_path / "escape.py").exists() and not (tmp_path / "job").exists()
