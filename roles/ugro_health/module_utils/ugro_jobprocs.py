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

import os

TAG = "UGRO_JOB_ID="


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


def tagged_processes(job_id=None):
    """This user's live processes in this PID namespace that carry a UGRO job tag (job_id's
    only, when given), in pid order, each as a dict: pid, ppid, job_id, rank, state, cmdline,
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
                v[len(TAG) :].decode("utf-8", "replace")
                for v in variables
                if v.startswith(TAG.encode())
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
