"""The daemon's light probe (ugro.monitor), run on a node by its system Python, sent over SSH
on stdin. Not an Ansible module: the daemon runs it without Ansible, a minute apart.

    python3 - EXPERIMENTS_PATH   ->  one JSON line

What it looks at costs nothing to a running job: load, free disk where jobs write, the GPUs as
`nvidia-smi --query-gpu` lists them (no CUDA context, no torch import), and the UGRO jobs whose
processes run here under this user. Standard library only, Python 3.8 and later.
"""

import json
import os
import shutil
import subprocess
import sys

GPU_FIELDS = "index,name,memory.total,memory.used,driver_version"


def gpus():
    """The GPUs nvidia-smi lists; None where there is no nvidia-smi, a string if it fails."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    try:
        done = subprocess.run(
            [binary, "--query-gpu=" + GPU_FIELDS, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return "nvidia-smi: " + str(exc)
    if done.returncode != 0:
        return "nvidia-smi: " + (done.stderr.strip() or f"exit {done.returncode}")[:200]
    found = []
    for line in done.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 5:
            found.append(
                {
                    "index": parts[0],
                    "name": parts[1],
                    "vram_total_mb": _number(parts[2]),
                    "vram_used_mb": _number(parts[3]),
                    "driver": parts[4],
                }
            )
    return found


def _number(text):
    try:
        return int(float(text))
    except ValueError:
        return None


def ugro_jobs():
    """{job id: processes} of UGRO jobs running here (what this user may read of /proc)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = handle.read().split(b"\0")
        except OSError:
            continue
        for item in environ:
            if item.startswith(b"UGRO_JOB_ID="):
                job = item.split(b"=", 1)[1].decode("utf-8", "replace")
                found[job] = found.get(job, 0) + 1
                break
    return found


def disk(path):
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    usage = shutil.disk_usage(path or "/")
    return round(usage.free / 1e9, 2), round(usage.total / 1e9, 2)


def main(argv):
    free, total = disk(argv[0] if argv else os.path.expanduser("~"))
    report = {
        "ok": True,
        "load1": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "disk_free_gb": free,
        "disk_total_gb": total,
        "gpus": gpus(),
        "ugro_jobs": ugro_jobs(),
    }
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
