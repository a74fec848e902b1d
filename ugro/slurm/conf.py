"""slurm.conf and gres.conf, as pure functions of the cluster and each node's facts.

The facts are what `slurmd -C` prints on the node (its hostname, CPUs and topology, memory) and
its GPU device files: a node line never claims more than slurmd finds, which is what makes
Slurm mark a node invalid. Pinned by golden files (tests/unit/golden/slurm/).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# `slurmd -C`'s first line: NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ...
_PAIR = re.compile(r"(\w+)=(\S+)")
_TOPOLOGY = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
_GPU_DEVICE = re.compile(r"/dev/nvidia(\d+)")
# Where Slurm keeps its state; %n is the node's name, so that nodes sharing one file system
# (the sandbox, a diskless cluster) never share a spool directory, pid file or log.
PATHS = {
    "StateSaveLocation": "/var/lib/slurm/slurmctld",
    "SlurmdSpoolDir": "/var/spool/slurmd/%n",
    "SlurmctldPidFile": "/run/slurmctld.pid",
    "SlurmdPidFile": "/run/slurmd-%n.pid",
    "SlurmctldLogFile": "/var/log/slurm/slurmctld.log",
    "SlurmdLogFile": "/var/log/slurm/slurmd-%n.log",
}


@dataclass(frozen=True)
class NodeFacts:
    name: str  # the UGRO node's name: Slurm's NodeName
    hostname: str  # what the machine calls itself (slurmd finds its line by it)
    address: str
    topology: Mapping[str, int]  # _TOPOLOGY's keys, as slurmd reports them
    memory_mb: int  # RealMemory as slurmd reports it
    gpus: tuple[str, ...] = field(default=())  # device files, /dev/nvidia0 ...


def parse_slurmd_c(text: str) -> tuple[str, dict[str, int], int]:
    """The hostname, topology and memory in `slurmd -C`'s output."""
    pairs = dict(_PAIR.findall(text.splitlines()[0] if text.strip() else ""))
    missing = [key for key in ("NodeName", *_TOPOLOGY, "RealMemory") if key not in pairs]
    if missing:
        raise ValueError(f"`slurmd -C` printed no {', '.join(missing)}: {text.strip()[:200]!r}")
    topology = {key: int(pairs[key]) for key in _TOPOLOGY}
    return pairs["NodeName"], topology, int(pairs["RealMemory"])


def gpu_devices(paths: Sequence[str]) -> tuple[str, ...]:
    """The GPU device files among `paths` (/dev/nvidia0, not nvidiactl), in index order."""
    found = {int(m.group(1)): p for p in paths if (m := _GPU_DEVICE.fullmatch(p))}
    return tuple(found[index] for index in sorted(found))


def node_line(node: NodeFacts, memory_margin_mb: int) -> str:
    memory = max(1, node.memory_mb - memory_margin_mb)
    parts = [
        f"NodeName={node.name}",
        f"NodeHostname={node.hostname}",
        f"NodeAddr={node.address}",
        *(f"{key}={node.topology[key]}" for key in _TOPOLOGY),
        f"RealMemory={memory}",
    ]
    if node.gpus:
        parts.append(f"Gres=gpu:{len(node.gpus)}")
    return " ".join(parts) + " State=UNKNOWN"


def slurm_conf(
    settings: Mapping[str, Any], controller: NodeFacts, nodes: Sequence[NodeFacts]
) -> str:
    """The whole slurm.conf: the same file on every node."""
    names = ",".join(node.name for node in nodes)
    lines = [
        "# Written by UGRO (roles/ugro_slurm) from cluster.yaml and each node's `slurmd -C`;",
        "# `ugro slurm up` rewrites it and `ugro slurm down` removes it.",
        f"ClusterName={settings['cluster_name']}",
        f"SlurmctldHost={controller.hostname}({controller.address})",
        f"SlurmctldPort={settings['controller_port']}",
        f"SlurmdPort={settings['node_port']}",
        "SlurmUser=slurm",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        # Process tracking by the process tree: proctrack/cgroup needs cgroups delegated to
        # slurmd, which containers and hosts without systemd do not give (slurmd will not start).
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "GresTypes=gpu",
        # A node that was down (a reboot, a partition) comes back by itself once its slurmd
        # registers with a valid configuration.
        "ReturnToService=2",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=30",
        "MinJobAge=300",
        "KillWait=10",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "MpiDefault=none",
        *(f"{key}={value}" for key, value in PATHS.items()),
        *(node_line(node, int(settings["memory_margin_mb"])) for node in nodes),
        f"PartitionName={settings['partition']} Nodes={names} Default=YES "
        "MaxTime=INFINITE State=UP",
    ]
    return "\n".join(lines) + "\n"


def gres_conf(nodes: Sequence[NodeFacts]) -> str:
    """gres.conf: each GPU of each node with its device file (the same file everywhere)."""
    lines = ["# Written by UGRO (roles/ugro_slurm) from each node's GPU device files."]
    for node in nodes:
        lines += [f"NodeName={node.name} Name=gpu File={device}" for device in node.gpus]
    return "\n".join(lines) + "\n"


def files_from_facts(
    seen: Mapping[str, Mapping[str, Any]],
    addresses: Mapping[str, str],
    *,
    hosts: Sequence[str],
    controller: str,
    settings: Mapping[str, Any],
) -> dict[str, str]:
    """Both files from what the role read on each node (`seen`: its `uname -n`, `slurmd -C`
    and device files) and each node's address; the controller needs no slurmd of its own."""

    def facts(host: str) -> NodeFacts:
        node = seen[host]
        hostname = str(node["hostname"]).split(".")[0]
        topology: dict[str, int] = {}
        memory = 0
        if host in hosts:  # a node that trains: slurmd's own view of it
            hostname, topology, memory = parse_slurmd_c(str(node["slurmd_c"]))
        devices = gpu_devices([str(d) for d in node.get("devices") or []])
        return NodeFacts(host, hostname, addresses[host], topology, memory, devices)

    nodes = [facts(host) for host in hosts]
    return {
        "slurm.conf": slurm_conf(settings, facts(controller), nodes),
        "gres.conf": gres_conf(nodes),
    }
