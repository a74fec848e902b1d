"""A UGRO job's processes on this node, read from /proc: the one reader on the nodes.

Stdlib only, Python 3.8+. The health probe (ugro_probe.py: which jobs run here) and the job
control (roles/ugro_job/files/jobctl.py: watch, stop, sweep) both use it. ugro sends each of
them with this module inlined when it runs them from stdin (ugro.nodes.scripts); a job's copy
of the job control sits beside a copy of it in the job's code/ directory.

A job's processes are found by the tag every one of them carries, UGRO_JOB_ID in its
environment: torchrun starts its workers in sessions of their own, so the agent's process group
alone would miss them. Only this user's processes in this PID namespace are looked at: on a real
host that is every process of the user; in the sandbox, where each node has its own PID
namespace, it keeps one node's reader from seeing another node's processes (root on the master
sees every namespace's).
"""

import contextlib
import os
import shutil
import signal
import subprocess
import time

TAG = "UGRO_JOB_ID="
# A deployment's server (`ugro serve`) carries this one: it is not a job, and a sweep of jobs
# leaves it alone.
DEPLOYMENT_TAG = "UGRO_DEPLOYMENT="

# How long a stop waits for the GPUs to release the memory of the processes it ended (the
# driver frees it a little after the process is gone).
GPU_RELEASE_WAIT_S = 15.0


def stat(pid):
    """(state letter, ppid) from /proc/<pid>/stat, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1])
    except (OSError, IndexError, ValueError):
        return None


def alive(pid):
    """Whether `pid` is a live process; a zombie counts as gone (`kill -0` still answers)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's, and alive
    found = stat(pid)
    return found is not None and found[0] != "Z"


def _own_pid_namespace():
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def tagged_processes(job_id=None, tag=TAG):
    """This user's live processes in this PID namespace that carry a UGRO job tag (job_id's
    only, when given), in pid order (`tag`: another kind of UGRO process, such as a
    deployment's server, DEPLOYMENT_TAG), each as a dict: pid, ppid, job_id, rank, state, cmdline,
    and role (agent, rank or other)."""
    namespace = _own_pid_namespace()
    uid = os.getuid()
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        base = "/proc/" + entry
        try:
            if uid != 0 and os.stat(base).st_uid != uid:
                continue
            if namespace is not None and os.readlink(base + "/ns/pid") != namespace:
                continue
            with open(base + "/environ", "rb") as handle:
                variables = handle.read().split(b"\0")
            tags = [
                v[len(tag) :].decode("utf-8", "replace")
                for v in variables
                if v.startswith(tag.encode())
            ]
            if not tags or (job_id is not None and tags[0] != job_id):
                continue
            state = stat(int(entry))
            if state is None or state[0] == "Z":
                continue
            with open(base + "/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            continue  # gone, or another user's
        environment = dict(
            v.decode("utf-8", "replace").split("=", 1) for v in variables if b"=" in v
        )
        rank = environment.get("RANK")
        found.append(
            {
                "pid": int(entry),
                "ppid": state[1],
                "job_id": tags[0],
                "rank": int(rank) if rank and rank.isdigit() else None,
                "state": state[0],
                "cmdline": cmdline[:300],
            }
        )
    found.sort(key=lambda p: p["pid"])
    _classify(found)
    return found


def jobs_here():
    """{job_id: [pids]}: every UGRO job with processes on this node (as tagged_processes finds
    them). A launch refuses a node running another job's; `ugro health` names the ones no job
    owns any more."""
    jobs = {}
    for process in tagged_processes():
        jobs.setdefault(process["job_id"], []).append(process["pid"])
    return {job_id: sorted(pids) for job_id, pids in sorted(jobs.items())}


def _classify(processes):
    """Mark each process as the torchrun agent, a rank (a worker the agent started), or other
    (launch.sh before it becomes the agent, a rank's data-loader children, ...)."""
    agents = {
        p["pid"]
        for p in processes
        if "torch.distributed.run" in p["cmdline"] or "torchrun" in p["cmdline"].split(" ", 1)[0]
    }
    for process in processes:
        if process["pid"] in agents:
            process["role"] = "agent"
        elif "ugro_rank.py" in process["cmdline"] and process["ppid"] not in {
            p["pid"] for p in processes if p["pid"] not in agents
        }:
            # A worker: started by the agent, or orphaned by it (then its parent is init).
            process["role"] = "rank"
        else:
            process["role"] = "other"


# --- ending processes -------------------------------------------------------------------------


def stop_pids(first, remaining, grace):
    """SIGTERM `first`, SIGKILL what `remaining()` still finds after `grace`, then check that
    none is left and that no GPU still holds memory for one of them (a job's processes, a
    deployment's server)."""
    started = time.monotonic()
    for pid in first:
        signal_pid(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and remaining():
        time.sleep(0.1)
    killed = remaining()
    for pid in killed:
        # A stopped process (kill -STOP) takes SIGKILL too; CONT lets it see it at once.
        signal_pid(pid, signal.SIGKILL)
        signal_pid(pid, signal.SIGCONT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and remaining():
        time.sleep(0.05)
    gpu_held = gpu_holders(set(first))
    deadline = time.monotonic() + GPU_RELEASE_WAIT_S
    while gpu_held and time.monotonic() < deadline:
        time.sleep(0.5)
        gpu_held = gpu_holders(set(first))
    return {
        "signalled": len(first),
        "killed": len(killed),
        "left": remaining(),
        "gpu_held": gpu_held,
        "gpu_checked": shutil.which("nvidia-smi") is not None,
        "took_s": round(time.monotonic() - started, 2),
    }


def gpu_holders(pids):
    """Which of `pids` a GPU still lists as holding memory (nvidia-smi, where there is one)."""
    if not pids or shutil.which("nvidia-smi") is None:
        return []
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    listed = {int(line) for line in done.stdout.split() if line.strip().isdigit()}
    return sorted(listed & pids)


def signal_pid(pid, sig):
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
