"""What a network check found, each with its fix; and what the LoRA sync will cost.

Pure but for reading the newest job's trainable parameters: from the assembled report (every
node's route, the pairs, the sweep) to findings: nodes not reached, the rendezvous port closed,
pairs that cannot connect (errors: a job on them would hang), an MTU that differs, a link far
below the others (warnings).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ugro.core.cluster import Cluster
from ugro.core.files import read_json_dict

# A node's best pair this far below the median node's is a slow link.
SLOW_RATIO = 1 / 3
# DDP all-reduces gradients in buckets of about this size (its bucket_cap_mb).
DDP_BUCKET_BYTES = 25 * 2**20


@dataclass(frozen=True)
class Finding:
    severity: str  # "error": a job would fail or hang; "warning": it would run slowly
    subject: str  # the node or pair it is about
    message: str
    fix: str


def findings(report: Mapping[str, Any]) -> list[Finding]:
    """What is wrong, each with its fix: nodes not reached, the rendezvous port closed, pairs
    that cannot connect, an MTU that differs, a link far below the others."""
    found: list[Finding] = []
    nodes: Mapping[str, Any] = report.get("nodes") or {}
    lead, port = report.get("lead"), report.get("rendezvous_port")
    unreached = [name for name, node in nodes.items() if not node.get("reached")]
    if unreached:
        # The others were stopped waiting for it: what they saw says nothing more.
        nodes = {name: nodes[name] for name in unreached}
    for name, node in nodes.items():
        if not node.get("reached"):
            why = "; ".join(node.get("problems") or []) or "no answer"
            found.append(
                Finding(
                    "error",
                    name,
                    f"{name} could not be reached over SSH: {why}",
                    f"check it is on and answers `ssh {name}`; `ugro health` says more",
                )
            )
            continue
        if node.get("rendezvous", "ok") != "ok" and name != lead:
            found.append(
                Finding(
                    "error",
                    name,
                    f"{name} cannot reach the rendezvous port {port} on {lead} "
                    f"({node.get('rendezvous')})",
                    f"open TCP port {port} on {lead} to the cluster's addresses (e.g. "
                    f"`sudo ufw allow from <subnet> to any port {port} proto tcp`), or set "
                    "communication.master_port to one that is open",
                )
            )
        for problem in node.get("problems") or []:
            if "rendezvous" not in problem:
                found.append(
                    Finding(
                        "error",
                        name,
                        f"{name}: {problem}",
                        f"`ugro health --node {name}` checks its environment and interfaces",
                    )
                )
    for pair in [] if unreached else report.get("pairs") or []:
        a, b = pair["nodes"]
        if not (nodes.get(a, {}).get("reached") and nodes.get(b, {}).get("reached")):
            continue
        if not pair.get("ok"):
            found.append(
                Finding(
                    "error",
                    f"{a}-{b}",
                    f"{a} and {b} cannot connect to each other on port {pair.get('port')} "
                    f"({pair.get('error')}): gloo and NCCL open their data connections on "
                    "ports like it, so a job on both would hang at its first all-reduce",
                    f"allow TCP between {a} and {b} on every port (their firewalls: e.g. "
                    f"`sudo ufw allow from <{a}'s address>` on {b} and the other way round)",
                )
            )
    mtus = {n: node.get("mtu") for n, node in nodes.items() if node.get("mtu")}
    if len(set(mtus.values())) > 1:
        usual = max(set(mtus.values()), key=list(mtus.values()).count)
        for name, mtu in mtus.items():
            if mtu != usual:
                interface = nodes[name].get("interface")
                found.append(
                    Finding(
                        "warning",
                        name,
                        f"{name}'s {interface} has an MTU of {mtu}, the others' {usual}: "
                        "packets larger than the smaller one are dropped or fragmented between "
                        "them, and collectives stall",
                        f"give every node the same MTU: `sudo ip link set dev {interface} mtu "
                        f"{usual}` on {name}, and the same in its network configuration",
                    )
                )
    found += _slow_links(report)
    return found


def _slow_links(report: Mapping[str, Any]) -> list[Finding]:
    """A node whose fastest pair is far below the median node's fastest: its own link."""
    best: dict[str, float] = {}
    for pair in report.get("pairs") or []:
        if pair.get("ok") and pair.get("mbps"):
            for name in pair["nodes"]:
                best[name] = max(best.get(name, 0.0), float(pair["mbps"]))
    if len(best) < 3:
        return []  # two nodes share their one link: slow or not, neither is the odd one out
    ordered = sorted(best.values())
    median = ordered[len(ordered) // 2]
    found = []
    for name, mbps in best.items():
        if mbps < median * SLOW_RATIO:
            interface = (report.get("nodes") or {}).get(name, {}).get("interface")
            found.append(
                Finding(
                    "warning",
                    name,
                    f"{name}'s link is slow: {mbps:,.0f} Mb/s at best, against {median:,.0f} "
                    "Mb/s for the others; every all-reduce waits for it",
                    f"check {name}'s {interface or 'interface'}: its cable or Wi-Fi, its "
                    "negotiated speed (`ethtool`), or traffic shaping (`tc qdisc show`)",
                )
            )
    return found


def lora_sync(cluster: Cluster, report: Mapping[str, Any], world: int) -> dict[str, Any] | None:
    """Seconds per optimizer step that all-reducing the LoRA gradients costs at the measured
    bandwidth, for the trainable parameters the cluster's newest job recorded."""
    sweep = report.get("sweep") or []
    busbw = report.get("busbw_gbps")
    if not sweep or not busbw or world < 2:
        return None
    latency = float(sweep[0]["seconds"])
    recorded = _newest_trainable_parameters(cluster)
    parameters, source = recorded if recorded else (None, None)

    def cost(nbytes: int) -> float:
        buckets = max(math.ceil(nbytes / DDP_BUCKET_BYTES), 1)
        return buckets * latency + nbytes * 2 * (world - 1) / world / (float(busbw) * 1e9)

    result: dict[str, Any] = {"seconds_per_10mb": round(cost(10 * 10**6), 4)}
    if parameters:
        nbytes = parameters * 4  # the adapter's gradients are fp32, also under mixed precision
        result.update(
            trainable_parameters=parameters,
            gradient_bytes=nbytes,
            seconds_per_step=round(cost(nbytes), 4),
            from_job=source,
        )
    return result


def _newest_trainable_parameters(cluster: Cluster) -> tuple[int, str] | None:
    root = cluster.paths.experiments
    try:
        configs = sorted(
            root.glob("*/train_config.json"), key=lambda p: p.stat().st_mtime, reverse=True
        )
    except OSError:
        return None
    for path in configs[:50]:
        value = read_json_dict(path).get("trainable_parameters")
        if isinstance(value, int) and value > 0:
            return value, path.parent.name
    return None


def interfaces(report: Mapping[str, Any]) -> dict[str, str]:
    """Each node's interface towards the lead, for GLOO_SOCKET_IFNAME and NCCL_SOCKET_IFNAME."""
    return {
        name: str(node["interface"])
        for name, node in (report.get("nodes") or {}).items()
        if isinstance(node, dict) and node.get("interface")
    }


def errors(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [f for f in report.get("findings") or [] if f.get("severity") == "error"]
