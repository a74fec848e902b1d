"""The network check's agents: scripts/ugro_netcheck.py on every node of the check at once.

Each node's training interpreter reads the agent from stdin, over SSH as every other command
reaches a node (the master's runs here). The lead starts first: it takes the first free port
from the cluster's rendezvous port (as a launch does; a running job's rendezvous holds its own)
and prints it on its first line; then the others start with that port. Each prints one JSON
report: its route to the lead, the rendezvous, its pairs' streams, and (the lead) the sweep.
"""

from __future__ import annotations

import json
import selectors
import subprocess
import time
from typing import Any

from ugro.core.cluster import Cluster, Node
from ugro.nodes import scripts
from ugro.nodes.ssh import on_node

# Every agent is done well within this: 45 s for every node to join (a slow one imports torch
# slowly), then waits of 10 s at most and a sweep of 4 s.
TIMEOUT_S = 100.0


def run_agents(cluster: Cluster, nodes: list[Node]) -> tuple[int, dict[str, dict[str, Any]]]:
    """Every node's report (the first node leads), and the rendezvous port the lead took."""
    script = scripts.script(scripts.NETCHECK).encode()
    began = time.monotonic()
    lead = _start(cluster, nodes[0], 0, nodes, cluster.launch.master_port, script)
    port = _announced_port(lead, began)
    if port is None:
        reports = {nodes[0].name: _read_agent(nodes[0], lead, began)}
        reports |= {
            n.name: {"reached": True, "problems": ["not checked: the lead failed"]}
            for n in nodes[1:]
        }
        return cluster.launch.master_port, reports
    running = [lead] + [
        _start(cluster, node, rank, nodes, port, script) for rank, node in enumerate(nodes) if rank
    ]
    _wait_for_agents(nodes, running, began)
    return port, {
        node.name: _read_agent(node, process, began)
        for node, process in zip(nodes, running, strict=True)
    }


def _start(
    cluster: Cluster, node: Node, rank: int, nodes: list[Node], port: int, script: bytes
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        _agent_argv(cluster, node, rank, nodes, port),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None
    try:
        process.stdin.write(script)
        process.stdin.close()
    except OSError:
        pass  # it ended at once (ssh could not connect): its stderr says why
    process.stdin = None  # given: communicate() later only reads
    return process


def _announced_port(lead: subprocess.Popen[bytes], began: float) -> int | None:
    """The port on the lead agent's first line; None when it ended (or hung) without one."""
    assert lead.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(lead.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=max(TIMEOUT_S - (time.monotonic() - began), 1.0)):
            return None
    line = lead.stdout.readline()
    try:
        port = json.loads(line).get("port")
    except (ValueError, AttributeError):
        return None
    return int(port) if isinstance(port, int) else None


def _agent_argv(cluster: Cluster, node: Node, rank: int, nodes: list[Node], port: int) -> list[str]:
    remote = [
        node.python,
        "-",
        "--rank",
        str(rank),
        "--world",
        str(len(nodes)),
        "--address",
        node.address,
        "--lead-address",
        nodes[0].address,
        "--port",
        str(port),
        "--addresses",
        ",".join(n.address for n in nodes),
    ]
    return on_node(cluster, node, remote)


def _wait_for_agents(
    nodes: list[Node], running: list[subprocess.Popen[bytes]], began: float
) -> None:
    """Until every agent is done; when SSH could not reach one, the others would only wait
    for it: they are ended, and the node that was not reached is the finding."""
    while time.monotonic() - began < TIMEOUT_S:
        codes = [process.poll() for process in running]
        if None not in codes:
            return
        lost = any(
            code == 255 and node.connection != "local"
            for node, code in zip(nodes, codes, strict=True)
        )
        if lost:
            for process in running:
                if process.poll() is None:
                    process.kill()
            return
        time.sleep(0.05)


def _read_agent(node: Node, process: subprocess.Popen[bytes], began: float) -> dict[str, Any]:
    try:
        out, err = process.communicate(timeout=max(TIMEOUT_S - (time.monotonic() - began), 1.0))
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return {"reached": False, "problems": [f"no answer within {TIMEOUT_S:.0f} s"]}
    lines = out.decode("utf-8", "replace").strip().splitlines()
    try:
        report = json.loads(lines[-1])
    except (ValueError, IndexError):
        report = None
    if not isinstance(report, dict):
        errors = err.decode("utf-8", "replace").strip().splitlines()
        why = errors[-1][:200] if errors else f"exit {process.returncode}"
        over_ssh = process.returncode == 255 and node.connection != "local"
        return {"reached": not over_ssh, "problems": [why], "ssh_failed": over_ssh}
    report["reached"] = True
    return report
