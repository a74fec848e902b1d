"""Each node's part of a job and its torchrun command, built in Python.

The launch role calls `node_plan` through the `ugro_launch_plan` filter (on the controller, with
the node's health report and the job's request), so the command is one function with golden
files (tests/unit/golden/) rather than an expression in YAML.

A rank's process tree on a node: torchrun's agent runs `code/scripts/ugro_rank.py`, which names
the rank's log by its global rank and runs the job's script in the same process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ugro.core.layout import CODE_DIR, LOGS_DIR

BACKENDS = ("c10d", "static")
RANK_WRAPPER = f"{CODE_DIR}/scripts/ugro_rank.py"


def endpoint(address: str, port: int) -> str:
    """host:port as torchrun parses it (an IPv6 address in brackets)."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def torchrun_command(
    *,
    python: str,
    nnodes: int,
    nproc_per_node: int,
    backend: str,
    master_addr: str,
    port: int,
    job_id: str,
    node_rank: int,
    join_timeout: int,
    max_restarts: int,
    local_addr: str,
    job_dir: str,
    script: str,
    args: Sequence[str] = (),
) -> list[str]:
    """The argv that starts this node's torchrun agent for the job."""
    if backend not in BACKENDS:
        raise ValueError(f"rendezvous backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    command = [
        python,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        str(nnodes),
        "--nproc-per-node",
        str(nproc_per_node),
        "--rdzv-backend",
        backend,
        "--rdzv-endpoint",
        endpoint(master_addr, port),
        "--rdzv-id",
        job_id,
    ]
    if backend == "c10d":
        # The master's agent hosts the rendezvous store (is_host=1); an agent that guessed from
        # its hostname would wait forever for a store nobody serves.
        is_host = 1 if node_rank == 0 else 0
        command += ["--rdzv-conf", f"is_host={is_host},join_timeout={join_timeout}"]
    else:
        # Static: fixed node ranks in the job's order, the master (node 0) hosts the store.
        command += ["--node-rank", str(node_rank), "--rdzv-conf", f"timeout={join_timeout}"]
    command += [
        "--max-restarts",
        str(max_restarts),
        "--local-addr",
        local_addr,
        f"{job_dir}/{RANK_WRAPPER}",
        "--log-dir",
        f"{job_dir}/{LOGS_DIR}",
        "--",
        f"{job_dir}/{CODE_DIR}/{script}",
        *map(str, args),
    ]
    return command


def node_plan(report: Mapping[str, Any], request: Mapping[str, Any]) -> dict[str, Any]:
    """This node's part of the job, from its health report and the job's request.

    `request` holds the node's own variables (python, address, nproc_per_node when set), the
    job's (job_id, job_dir, script, args, backend, max_restarts, join_timeout), the master's
    address and free port, and the job's nodes in order (`hosts`) with this one's name (`host`).
    """
    hosts = list(request["hosts"])
    node_rank = hosts.index(request["host"])
    override = request.get("nproc_per_node")
    gpus = int((report.get("env") or {}).get("device_count") or 0)
    if override not in (None, ""):
        nproc = int(override)
    elif report.get("effective_accelerator") == "cuda":
        nproc = max(gpus, 1)
    else:
        nproc = 1
    # CPU ranks sharing a node share its cores; oversubscribed, they run several times slower.
    # cluster.yaml's hardware.cpu_cores, when it says fewer (physical cores beside SMT threads;
    # the sandbox's nodes, which share one machine), is what they share.
    cores = int(report.get("cpus_usable") or 1)
    declared = request.get("cpu_cores")
    if declared not in (None, ""):
        cores = min(cores, int(declared))
    threads = max(cores // max(nproc, 1), 1)
    port = int(request["port"])
    return {
        "port": port,
        "interface": report.get("interface") or "",
        "nproc": nproc,
        "threads": threads,
        "node_rank": node_rank,
        "command": torchrun_command(
            python=str(request["python"]),
            nnodes=len(hosts),
            nproc_per_node=nproc,
            backend=str(request["backend"]),
            master_addr=str(request["master_addr"]),
            port=port,
            job_id=str(request["job_id"]),
            node_rank=node_rank,
            join_timeout=int(request["join_timeout"]),
            max_restarts=int(request["max_restarts"]),
            local_addr=str(request["address"]),
            job_dir=str(request["job_dir"]),
            script=str(request["script"]),
            args=[str(a) for a in request.get("args") or []],
        ),
    }
