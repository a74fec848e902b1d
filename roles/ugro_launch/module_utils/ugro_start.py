"""Start one UGRO job on this node: write its files, check its scripts, start it detached.

Stdlib only, Python 3.8+. The launch role runs it inside its module (library/ugro_start_job.py)
as one task: each Ansible task is a round trip and a fork per node, and measured in bench/, the
seven file-and-start tasks (and the task that recorded the pid) this replaces cost a launch
seconds before its first training step. Run as a script it reads the same request as one JSON
object on stdin:

    {"job_dir": "/home/ob/projects/UGRO/data/experiments/exp1_20261129_101010",
     "files": [{"name": "code/scripts/ugro_rank.py", "content": "...", "mode": "0640"},
               {"name": "launch.sh", "content": "...", "mode": "0750", "check": "bash"}, ...],
     "start": "supervise.sh", "pid_timeout": 30, "attempt": 1, "check_mode": false}

A file's name is a path relative to the job directory (its directories are made as needed);
nothing may lead out of it. Attempt 1 refuses a directory holding a started job; a later
attempt (a retry, a resume) moves the previous attempt's outcome into attempts/<n>/ first, so
the controller reads only the current attempt's exit codes and progress.

and prints one JSON object: {"changed": true, "pid": 12345}, or {"failed": true, "msg": ...}
with exit code 1. In check mode the scripts are written to a scratch directory and checked with
`bash -n`, and nothing is started.
"""

import glob
import json
import os
import subprocess
import sys
import tempfile
import time

DIRECTORY_MODE = 0o750


def main():
    try:
        request = json.load(sys.stdin)
    except ValueError as exc:
        return fail(f"malformed start request: {exc}")
    result, error = run(request)
    if error:
        return fail(error)
    print(json.dumps(result))
    return 0


def fail(message):
    print(json.dumps({"failed": True, "msg": message}))
    print(message, file=sys.stderr)
    return 1


def run(request):
    """start(), with each failure it expects as one line: (result, None) or (None, message)."""
    try:
        return start(request), None
    except JobError as exc:
        return None, str(exc)
    except (ValueError, KeyError, TypeError) as exc:
        return None, f"malformed start request: {exc}"
    except (OSError, subprocess.CalledProcessError) as exc:
        return None, f"cannot start the job: {exc}"


class JobError(Exception):
    pass


def start(request):
    job_dir = request["job_dir"]
    files = request["files"]
    for entry in files:
        check_name(entry["name"])
    if request.get("check_mode"):
        with tempfile.TemporaryDirectory(prefix="ugro-check-") as scratch:
            for entry in files:
                write(scratch, entry)
        return {"changed": False, "pid": None, "checked": [e["name"] for e in files]}
    attempt = int(request.get("attempt") or 1)
    if attempt > 1:
        archive_attempt(job_dir, attempt - 1)
    elif os.path.exists(os.path.join(job_dir, "pid")):
        raise JobError(f"{job_dir} already holds a started job (its pid file exists)")
    for directory in (job_dir, os.path.join(job_dir, "logs")):
        os.makedirs(directory, exist_ok=True)
        os.chmod(directory, DIRECTORY_MODE)
    for entry in files:
        write(job_dir, entry)
    if not request["start"]:
        return {"changed": True, "pid": None}  # Slurm starts it (srun), not this task
    supervisor = os.path.join(job_dir, request["start"])
    # setsid --fork: the supervisor leads a session of its own, outliving this task's connection.
    subprocess.run(
        ["setsid", "--fork", "bash", supervisor],
        cwd=job_dir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    return {"changed": True, "pid": wait_for_pid(job_dir, float(request["pid_timeout"]))}


# An attempt's outcome on the node, moved aside before the next attempt starts.
ATTEMPT_FILES = ("pid", "exit_code", "logs/*.exit", "logs/*.progress")


def archive_attempt(job_dir, previous):
    """Move attempt `previous`'s outcome into attempts/<previous>/ (a repeated call moves
    nothing twice: what is already there stays)."""
    target = os.path.join(job_dir, "attempts", str(previous))
    for pattern in ATTEMPT_FILES:
        for path in glob.glob(os.path.join(job_dir, pattern)):
            destination = os.path.join(target, os.path.relpath(path, job_dir))
            os.makedirs(os.path.dirname(destination), mode=DIRECTORY_MODE, exist_ok=True)
            if not os.path.exists(destination):
                os.replace(path, destination)
            else:
                os.unlink(path)


def check_name(name):
    """A relative path inside the job directory: no absolute path, no '..', no empty part."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise JobError(f"not a file name inside the job directory: {name!r}")


def write(directory, entry):
    """Write one file atomically with its mode; a script must pass `bash -n` before it lands."""
    path = os.path.join(directory, entry["name"])
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=DIRECTORY_MODE)
    base = os.path.basename(path)
    fd, temporary = tempfile.mkstemp(dir=parent, prefix=f".{base}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(entry["content"])
        os.chmod(temporary, int(entry.get("mode", "0640"), 8))
        if entry.get("check") == "bash":
            checked = subprocess.run(
                ["bash", "-n", temporary], capture_output=True, text=True, check=False
            )
            if checked.returncode != 0:
                raise JobError(f"{entry['name']} does not parse: {checked.stderr.strip()}")
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def wait_for_pid(job_dir, timeout):
    path = os.path.join(job_dir, "pid")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as handle:
                return int(handle.read().strip())
        except (OSError, ValueError):
            time.sleep(0.05)
    raise JobError(f"the supervisor wrote no pid to {path} within {timeout:.0f}s")


if __name__ == "__main__":
    sys.exit(main())
