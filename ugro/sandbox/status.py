"""How a sandbox is: each node's address, user, whether its sshd answers, and its faults."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ugro.core.errors import UsageError
from ugro.sandbox import layout, system
from ugro.sandbox.layout import NodePlan, Sandbox


@dataclass(frozen=True)
class NodeStatus:
    name: str
    user: str
    address: str
    netns: str
    sshd: str  # "answers", "down", "no answer"
    faults: str


def status(name: str = layout.DEFAULT_NAME) -> tuple[Sandbox, list[NodeStatus]]:
    sandbox = layout.load(name)
    if sandbox is None:
        raise UsageError(f"sandbox {name} is not up; start it with `ugro sandbox up`")
    rows = []
    answers = _probe_all(sandbox.nodes)
    for node in sandbox.nodes:
        banner = answers[node.name]
        state = (
            "answers"
            if banner and banner.startswith("SSH-")
            else ("down" if node.down else "no answer")
        )
        rows.append(
            NodeStatus(node.name, node.user, node.address, node.netns, state, _faults(node))
        )
    return sandbox, rows


def _probe_all(nodes: list[NodePlan]) -> dict[str, str | None]:
    with ThreadPoolExecutor(max_workers=32) as pool:
        banners = pool.map(lambda n: system.tcp_banner(n.address, timeout=1.0), nodes)
        return {node.name: banner for node, banner in zip(nodes, banners, strict=True)}


def _faults(node: NodePlan) -> str:
    faults = []
    if node.down:
        faults.append("down")
    if node.partitioned:
        faults.append("partitioned")
    if node.delay_ms:
        faults.append(f"delay {node.delay_ms}ms")
    if node.rate_kbit:
        faults.append(f"rate {node.rate_kbit}kbit")
    if node.cpu_percent:
        faults.append(f"cpu {node.cpu_percent}%")
    if node.mtu:
        faults.append(f"mtu {node.mtu}")
    if node.blocked:
        faults.append(f"blocks {', '.join(node.blocked)}")
    return ", ".join(faults) or "-"
