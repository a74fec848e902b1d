"""UGRO job control on one node: report a job's state, watch it, stop it, or sweep every job.

Stdlib only, Python 3.8+. The ugro_job role runs it (fed on stdin) for `state`, `stop` and
`sweep`; every job also carries a copy (code/ugro_jobctl.py), which the job's controller on the
master runs over SSH for `watch` (one JSON line a second, the node's heartbeat) and `stop`.

A job's processes are found by the tag every one of them carries, UGRO_JOB_ID in its
environment, by ugro_jobprocs (the node-side reader the health probe uses too): only this
user's processes in this PID namespace.

Times in a report are ages in seconds on this node's clock ("age": now - when), so the master
can place them on its own clock without trusting the node's.
"""

import argparse
import glob
import json
import os
import re
import select
import sys
import time

# The one reader of a job's processes on a node (roles/ugro_health/module_utils): beside this
# file in a job's code/ directory, or inlined before it when ugro sends it on stdin.
from ugro_jobprocs import alive, stop_pids, tagged_processes

# What ugro_rank.py writes when torchrun (or a stop) ends a rank with SIGTERM: a consequence of
# a failure elsewhere, not a cause.
TERMINATED = 143

# How often a watch looks, between two heartbeats, for the job's end (a beat goes at once).
ENDED_CHECK_S = 0.1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=("state", "stop", "watch", "sweep"))
    parser.add_argument("--job-id", default="")
    parser.add_argument("--job-id-pattern", required=True, help="the job layout's id pattern")
    parser.add_argument("--job-dir", default="")
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--log-lines", type=int, default=15)
    parser.add_argument("--interval", type=float, default=1.0, help="watch: seconds per report")
    parser.add_argument("--kill", action="store_true", help="sweep: stop every tagged process")
    parser.add_argument("--dry-run", action="store_true", help="stop: list, signal nothing")
    args = parser.parse_args(argv)
    if args.action != "sweep" and not re.match(args.job_id_pattern, args.job_id):
        print(json.dumps({"error": "invalid job id"}))
        return 2
    if args.action != "sweep" and not args.job_dir:
        print(json.dumps({"error": "--job-dir is required"}))
        return 2
    if args.action == "watch":
        return watch(args.job_id, args.job_dir, args.interval, args.log_lines)
    if args.action == "sweep":
        print(json.dumps(sweep(args.job_id_pattern, args.kill, args.grace), sort_keys=True))
        return 0
    report = {"job_id": args.job_id}
    if args.action == "stop" and args.dry_run:
        pids = [p["pid"] for p in job_processes(args.job_id)]
        report.update({"signalled": 0, "killed": 0, "would_signal": pids})
    elif args.action == "stop":
        report.update(stop(args.job_id, args.grace))
    report.update(state(args.job_id, args.job_dir, args.log_lines))
    print(json.dumps(report, sort_keys=True))
    return 0


# --- finding a job's processes ------------------------------------------------------------------


def job_processes(job_id):
    return tagged_processes(job_id)


# --- a job's state ------------------------------------------------------------------------------


def state(job_id, job_dir, log_lines):
    processes = job_processes(job_id)
    report = {"exists": os.path.isdir(job_dir), "processes": [p["pid"] for p in processes]}
    report["pid"] = _read_int(os.path.join(job_dir, "pid"))
    report["exit_code"] = _read_int(os.path.join(job_dir, "exit_code"))
    report["running"] = bool(processes) or (
        report["pid"] is not None and report["exit_code"] is None and alive(report["pid"])
    )
    ranks = rank_exits(job_dir, log_lines)
    report["ranks"] = {
        str(k): {"exit_code": v["exit_code"], **({"tail": v["tail"]} if "tail" in v else {})}
        for k, v in sorted(ranks.items())
    }
    if report["exit_code"] not in (None, 0) and not any(r["exit_code"] for r in ranks.values()):
        report["agent_tail"] = agent_tail(job_dir, log_lines)
    return report


def rank_exits(job_dir, log_lines):
    """{rank: {exit_code, age[, tail]}} from logs/<node>.rank<R>.exit (a failed rank's with
    the tail of its log)."""
    now = time.time()
    ranks = {}
    for path in glob.glob(os.path.join(job_dir, "logs", "*.rank*.exit")):
        match = re.search(r"\.rank(\d+)\.exit$", path)
        code = _read_int(path)
        if not match or code is None:
            continue
        try:
            age = max(0.0, now - os.stat(path).st_mtime)
        except OSError:
            continue
        entry = {"exit_code": code, "age": round(age, 2)}
        if code != 0:
            entry["tail"] = _tail(path[: -len(".exit")] + ".log", log_lines)
        ranks[int(match.group(1))] = entry
    return ranks


def rank_progress(job_dir):
    """{rank: {step, age}}: each rank's progress heartbeat (its last completed step)."""
    now = time.time()
    progress = {}
    for path in glob.glob(os.path.join(job_dir, "logs", "*.rank*.progress")):
        match = re.search(r"\.rank(\d+)\.progress$", path)
        try:
            with open(path) as handle:
                beat = json.load(handle)
            progress[int(match.group(1))] = {
                "step": int(beat["step"]),
                "age": round(max(0.0, now - float(beat["at"])), 2),
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # not written yet, or being replaced
    return progress


def agent_tail(job_dir, log_lines):
    agent = glob.glob(os.path.join(job_dir, "logs", "*.agent.log"))
    return _tail(agent[0], log_lines) if agent else []


def snapshot(job_id, job_dir, log_lines):
    """One heartbeat: the job's processes, its supervisor, each rank's exit and progress."""
    pid = _read_int(os.path.join(job_dir, "pid"))
    exit_code = _read_int(os.path.join(job_dir, "exit_code"))
    processes = job_processes(job_id)
    return {
        "beat": True,
        "job_id": job_id,
        "exists": os.path.isdir(job_dir),
        "processes": [
            {k: p[k] for k in ("pid", "ppid", "rank", "role", "state")} for p in processes
        ],
        "supervisor": {
            "pid": pid,
            "alive": pid is not None and alive(pid),
            "exit_code": exit_code,
        },
        "ranks": {str(k): v for k, v in sorted(rank_exits(job_dir, log_lines).items())},
        "progress": {str(k): v for k, v in sorted(rank_progress(job_dir).items())},
        "agent_tail": agent_tail(job_dir, log_lines) if exit_code not in (None, 0) else [],
    }


def watch(job_id, job_dir, interval, log_lines):
    """A heartbeat line every `interval` seconds until stdin closes (the master hung up), and
    one at once when the job's supervisor ends: the master tears down or retries that much
    sooner, instead of up to an interval later."""
    while True:
        # Read before the beat is taken, never after: a supervisor that ends between the beat and
        # a later read would be reported alive and its end would wait a whole interval.
        ended = _supervisor_ended(job_dir)
        try:
            sys.stdout.write(
                json.dumps(snapshot(job_id, job_dir, log_lines), sort_keys=True) + "\n"
            )
            sys.stdout.flush()
        except BrokenPipeError:
            return 0
        deadline = time.monotonic() + interval
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([sys.stdin], [], [], min(left, ENDED_CHECK_S))
            if readable and not os.read(sys.stdin.fileno(), 4096):
                return 0  # EOF: whoever watched is gone
            if not ended and _supervisor_ended(job_dir):
                break


def _supervisor_ended(job_dir):
    """Whether the job's supervisor has written its exit code or is gone (cheap: two stats)."""
    if os.path.exists(os.path.join(job_dir, "exit_code")):
        return True
    pid = _read_int(os.path.join(job_dir, "pid"))
    return pid is not None and not alive(pid)


# --- stopping -----------------------------------------------------------------------------------


def stop(job_id, grace):
    """SIGTERM every process of the job, SIGKILL what is left after `grace`, then check that
    none remains and that no GPU still holds memory for one of them."""
    first = [p["pid"] for p in job_processes(job_id)]
    return stop_pids(first, lambda: [p["pid"] for p in job_processes(job_id)], grace)


def sweep(job_id_pattern, kill, grace):
    """Every UGRO-tagged process of this user, by job; with kill, stop them all and verify."""
    pattern = re.compile(job_id_pattern)
    processes = [p for p in tagged_processes() if pattern.match(p["job_id"])]
    jobs = {}
    for process in processes:
        jobs.setdefault(process["job_id"], []).append(process["pid"])
    report = {"jobs": jobs}
    if kill:

        def remaining():
            return [p["pid"] for p in tagged_processes() if pattern.match(p["job_id"])]

        report.update(stop_pids([p["pid"] for p in processes], remaining, grace))
    return report


# --- small readers ------------------------------------------------------------------------------


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
