"""UGRO job control on one node: report a job's state, or stop every process of it.

Run by the ugro_job role (stdlib only, Python 3.8+), it prints one JSON object. A job's processes
are found by the tag every one of them carries, UGRO_JOB_ID in its environment: torchrun starts
its workers in sessions of their own, so the agent's process group alone would miss them.
"""

import argparse
import contextlib
import glob
import json
import os
import re
import signal
import sys
import time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=("state", "stop"))
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--job-id-pattern", required=True, help="the job layout's id pattern")
    parser.add_argument("--job-dir", required=True)
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--log-lines", type=int, default=15)
    parser.add_argument("--dry-run", action="store_true", help="stop: list, signal nothing")
    args = parser.parse_args(argv)
    if not re.match(args.job_id_pattern, args.job_id):
        print(json.dumps({"error": "invalid job id"}))
        return 2
    report = {"job_id": args.job_id}
    if args.action == "stop" and args.dry_run:
        report.update({"signalled": 0, "killed": 0, "would_signal": tagged_processes(args.job_id)})
    elif args.action == "stop":
        report.update(stop(args.job_id, args.grace))
    report.update(state(args.job_id, args.job_dir, args.log_lines))
    print(json.dumps(report, sort_keys=True))
    return 0


def tagged_processes(job_id):
    """Pids of this user's processes whose environment carries UGRO_JOB_ID=<job_id>."""
    needle = ("UGRO_JOB_ID=" + job_id).encode()
    found = []
    for path in glob.glob("/proc/[0-9]*/environ"):
        pid = int(path.split("/")[2])
        if pid == os.getpid():
            continue
        try:
            with open(path, "rb") as handle:
                variables = handle.read().split(b"\0")
        except OSError:
            continue  # gone, or another user's
        if needle in variables and not _zombie(pid):
            found.append(pid)
    return sorted(found)


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def stop(job_id, grace):
    first = tagged_processes(job_id)
    for pid in first:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and tagged_processes(job_id):
        time.sleep(0.1)
    killed = tagged_processes(job_id)
    for pid in killed:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and tagged_processes(job_id):
        time.sleep(0.05)
    return {"signalled": len(first), "killed": len(killed), "left": tagged_processes(job_id)}


def _signal(pid, sig):
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def state(job_id, job_dir, log_lines):
    report = {"exists": os.path.isdir(job_dir), "processes": tagged_processes(job_id)}
    report["pid"] = _read_int(os.path.join(job_dir, "pid"))
    report["exit_code"] = _read_int(os.path.join(job_dir, "exit_code"))
    report["running"] = bool(report["processes"]) or (
        report["pid"] is not None and report["exit_code"] is None and _alive(report["pid"])
    )
    ranks = {}
    for path in glob.glob(os.path.join(job_dir, "logs", "*.rank*.exit")):
        match = re.search(r"\.rank(\d+)\.exit$", path)
        code = _read_int(path)
        if match and code is not None:
            rank = int(match.group(1))
            ranks[rank] = {"exit_code": code}
            if code != 0:
                ranks[rank]["tail"] = _tail(path[: -len(".exit")] + ".log", log_lines)
    report["ranks"] = {str(k): v for k, v in sorted(ranks.items())}
    if report["exit_code"] not in (None, 0) and not any(r["exit_code"] for r in ranks.values()):
        agent = glob.glob(os.path.join(job_dir, "logs", "*.agent.log"))
        report["agent_tail"] = _tail(agent[0], log_lines) if agent else []
    return report


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _read_int(path):
    try:
        with open(path) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def _tail(path, lines):
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16384))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


if __name__ == "__main__":
    sys.exit(main())
