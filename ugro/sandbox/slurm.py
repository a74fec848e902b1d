"""A sandbox ready for Slurm (`ugro sandbox up --slurm`), deployed by the same role as a real
cluster (`ugro slurm up`).

Two things differ from real hosts, and both are made here:
- Slurm runs a job as one user on every node, and UGRO's files on a node belong to the node's
  user: so every node logs in as the master's user (root when the tests run), with a home of
  its own under the sandbox's directory and the sandbox's key (sshd's AuthorizedKeysFile), no
  user made or removed;
- the nodes share this machine's file system, where munged keeps its socket, pid file, seed and
  log in fixed places: each node gets its own directories, bound over those in its own mount
  namespace (nodeinit, $UGRO_SANDBOX_PRIVATE), as a real host has its own disk. Slurm's own
  per-node files are apart already: slurm.conf names them with %n (ugro.slurm.conf).
/etc/slurm and /etc/munge stay shared: every node's copy is the same file on real hosts too.
One Slurm per machine: the master's daemons and /etc/slurm are this machine's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ugro.core import processes
from ugro.core.errors import UsageError
from ugro.sandbox import system
from ugro.sandbox.layout import NodePlan, Sandbox

# munged's fixed places, each node's own.
PRIVATE_DIRS = ("/run/munge", "/var/lib/munge", "/var/log/munge")
# The master's daemons run on this machine itself: `down` ends them by their pid files.
MASTER_PID_FILES = {
    "slurmctld": "/run/slurmctld.pid",
    "munged": "/run/munge/munged.pid",
}
# Where the role writes slurm.conf and slurmctld keeps its state (ugro.slurm.conf.PATHS).
CONF = "/etc/slurm/slurm.conf"
STATE_DIR = "/var/lib/slurm/slurmctld"


def check_prerequisites() -> None:
    # sudo: the role becomes root (`become`), as on real hosts, even where it is root already.
    missing = [tool for tool in ("sudo", "slurmctld", "slurmd", "munged") if not system.which(tool)]
    if missing:
        raise UsageError(
            f"--slurm needs {', '.join(missing)} on this machine: "
            "apt-get install sudo munge slurmctld slurmd slurm-client"
        )


def cgroup_kind() -> str:
    """The host's cgroup file system, which each node mounts again (nodeinit)."""
    return "v2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "v1"


def private_binds(sandbox: Sandbox, node: NodePlan) -> list[tuple[str, str]]:
    """(the node's own directory, the path it is bound over), made here if missing."""
    binds = []
    for target in PRIVATE_DIRS:
        source = sandbox.node_dir(node) / "private" / target.strip("/").replace("/", "_")
        source.mkdir(parents=True, exist_ok=True)
        Path(target).mkdir(parents=True, exist_ok=True)
        binds.append((str(source), target))
    return binds


def authorized_keys(sandbox: Sandbox) -> str:
    """The nodes' sshd reads the master's key from here (AuthorizedKeysFile)."""
    return str(sandbox.root / "authorized_keys")


def make_home(sandbox: Sandbox, node: NodePlan, public_key: str) -> None:
    """The node's home (the master's user, a directory of the node's own) and the key it
    accepts; nobody else may write either, as sshd's StrictModes requires."""
    Path(node.home).mkdir(mode=0o755, parents=True, exist_ok=True)
    keys = Path(authorized_keys(sandbox))
    keys.write_text(public_key, encoding="utf-8")
    keys.chmod(0o600)


def cluster_name(sandbox_name: str) -> str:
    """Slurm's ClusterName for a sandbox: how `down` knows the configuration is its own."""
    return f"sandbox-{sandbox_name}"


def remove(sandbox_name: str, node_names: list[str]) -> bool:
    """End the master's Slurm daemons; remove Slurm's configuration and state when they are this
    sandbox's (slurmctld refuses a state directory saved under another ClusterName). True if
    anything was there."""
    found = [(name, path) for name, path in _master_pid_files(node_names) if Path(path).exists()]
    pids = [pid for name, path in found if (pid := _live_pid(path, name))]
    processes.end(pids, grace=5.0)
    paths = [Path(path) for _name, path in found]
    if _ours(Path(CONF), sandbox_name):
        paths += [Path(CONF), Path(CONF).with_name("gres.conf")]
        for directory in [STATE_DIR, *(f"/var/spool/slurmd/{n}" for n in node_names)]:
            shutil.rmtree(directory, ignore_errors=True)
    existed = [path for path in paths if path.exists()]
    for path in existed:
        path.unlink()
    return bool(existed or pids)


def _ours(conf: Path, sandbox_name: str) -> bool:
    try:
        return f"ClusterName={cluster_name(sandbox_name)}\n" in conf.read_text(encoding="utf-8")
    except OSError:
        return False


def _master_pid_files(node_names: list[str]) -> list[tuple[str, str]]:
    """Each daemon's pid file on this machine: the master's, and every node's slurmd's (which
    names a pid of the node's own PID namespace: only the comm check may trust it)."""
    return [*MASTER_PID_FILES.items(), *(("slurmd", f"/run/slurmd-{n}.pid") for n in node_names)]


def _live_pid(path: str, name: str) -> int | None:
    try:
        pid = int(Path(path).read_text().split()[0])
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError, IndexError):
        return None
    return pid if comm == name and processes.alive(pid) else None
