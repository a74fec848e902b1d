"""`ugro netcheck` and the launch's network preflight: what the job's nodes' network can do.

Each node runs the check's agent (ugro.network.agents): its route to the lead, the lead's
rendezvous port, a stream between every pair of nodes on ports the kernel picks (as gloo's and
NCCL's are), and an all-reduce sweep over the real backend. Here: their reports assembled, what
is wrong named with the fix (ugro.network.findings), and the result kept
(~/.cache/ugro/netcheck/, keyed by the nodes' addresses) so that a launch runs the check only
when it has none recent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ugro.core.cluster import Cluster, Node
from ugro.core.files import read_json_dict, write_json_atomic
from ugro.network.agents import run_agents
from ugro.network.findings import errors, findings, interfaces, lora_sync

log = logging.getLogger(__name__)


def check(cluster: Cluster, names: Sequence[str]) -> dict[str, Any]:
    """Run the check on these nodes (the first leads) and keep its report."""
    nodes = [cluster.node(n) for n in names]
    began = time.monotonic()
    port, reports = run_agents(cluster, nodes)
    report = _assemble(cluster, nodes, port, reports, time.monotonic() - began)
    if all(node["reached"] for node in report["nodes"].values()):
        # A node that did not answer says nothing about the network: not worth keeping.
        write_json_atomic(cache_path(cluster, names), report)
    return report


def _assemble(
    cluster: Cluster,
    nodes: list[Node],
    port: int,
    reports: Mapping[str, dict[str, Any]],
    took: float,
) -> dict[str, Any]:
    names = [n.name for n in nodes]
    lead = reports[names[0]]
    per_node = {}
    for node in nodes:
        seen = reports[node.name]
        per_node[node.name] = {
            "address": node.address,
            "reached": bool(seen.get("reached")),
            "interface": seen.get("interface"),
            "mtu": seen.get("mtu"),
            "speed_mbps": seen.get("speed_mbps"),
            "rendezvous": seen.get("rendezvous"),
            "problems": list(seen.get("problems") or []),
        }
    pairs = []
    for a in range(len(nodes)):
        for b in range(a + 1, len(nodes)):
            mine = (reports[names[a]].get("peers") or {}).get(str(b)) or {}
            theirs = (reports[names[b]].get("peers") or {}).get(str(a)) or {}
            pairs.append(
                {
                    "nodes": [names[a], names[b]],
                    "ok": bool(mine.get("ok")) and bool(theirs.get("ok")),
                    "mbps": theirs.get("mbps") or mine.get("mbps"),
                    "connect_ms": mine.get("connect_ms"),
                    "port": mine.get("port"),
                    "error": mine.get("error") or theirs.get("error"),
                }
            )
    sweep = [s for s in lead.get("sweep") or [] if isinstance(s, dict)]
    report: dict[str, Any] = {
        "checked_at": time.time(),
        "took_s": round(took, 2),
        "cluster": cluster.name,
        "lead": names[0],
        "rendezvous_port": port,
        "key": cache_key(cluster, names),
        "nodes": per_node,
        "pairs": pairs,
        "backend": lead.get("backend"),
        "sweep": sweep,
        "latency_ms": round(sweep[0]["seconds"] * 1000, 3) if sweep else None,
        "busbw_gbps": max((s["busbw_gbps"] for s in sweep), default=None),
    }
    report["lora_sync"] = lora_sync(cluster, report, len(nodes))
    report["findings"] = [asdict(f) for f in findings(report)]
    return report


# --- The cache -----------------------------------------------------------------------------------


def cache_key(cluster: Cluster, names: Sequence[str]) -> str:
    """The job's nodes as the network sees them: name, address, SSH port and user, in order."""
    nodes = [cluster.node(n) for n in names]
    text = json.dumps(
        [[n.name, n.address, n.port, n.user] for n in nodes] + [cluster.launch.master_port]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cache_path(cluster: Cluster, names: Sequence[str]) -> Path:
    """In the user's cache (~/.cache/ugro/netcheck/): the network is the same whichever project
    directory a launch comes from."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ugro" / "netcheck" / f"{cache_key(cluster, names)}.json"


def cached(cluster: Cluster, names: Sequence[str], max_age_s: float) -> dict[str, Any] | None:
    report = read_json_dict(cache_path(cluster, names))
    if report.get("key") != cache_key(cluster, names):
        return None
    age = time.time() - float(report.get("checked_at") or 0)
    return report if 0 <= age <= max_age_s else None


def covering(cluster: Cluster, names: Sequence[str], max_age_s: float) -> dict[str, Any] | None:
    """A recent check of more nodes with the same lead, narrowed to these: its pairs among
    them were tested, and each one's route to that lead found. (A job on a subset of the nodes
    needs no check of its own.)"""
    wanted = set(names)
    best: dict[str, Any] | None = None
    for path in cache_path(cluster, names).parent.glob("*.json"):
        report = read_json_dict(path)
        nodes = report.get("nodes")
        if not isinstance(nodes, dict) or report.get("lead") != names[0]:
            continue
        if not wanted <= set(nodes) or not set(nodes) <= set(cluster.node_names):
            continue
        # Its key is that of its nodes as the cluster has them now: same addresses, users, ports.
        if report.get("key") != cache_key(cluster, [n for n in cluster.node_names if n in nodes]):
            continue
        age = time.time() - float(report.get("checked_at") or 0)
        if 0 <= age <= max_age_s and (best is None or report["checked_at"] > best["checked_at"]):
            best = report
    if best is None:
        return None

    def ours(subject: str) -> bool:
        return set(subject.split("-")) <= wanted if "-" in subject else subject in wanted

    return best | {
        "nodes": {n: v for n, v in best["nodes"].items() if n in wanted},
        "pairs": [p for p in best.get("pairs") or [] if set(p.get("nodes") or []) <= wanted],
        "findings": [f for f in best.get("findings") or [] if ours(str(f.get("subject")))],
    }


def preflight(cluster: Cluster, names: Sequence[str]) -> tuple[dict[str, str], str | None]:
    """A launch's network check: each node's interface, and why the job cannot run on this
    network (None when it can). The last result serves while it is recent enough; a node SSH
    does not reach is left to the launch's own preflight, which names it."""
    if len(names) < 2:
        return {}, None
    max_age = cluster.launch.netcheck_max_age_s
    report = cached(cluster, names, max_age) or covering(cluster, names, max_age)
    if report is None:
        log.info("checking the network of %s", ", ".join(names))
        report = check(cluster, names)
        log.info("network check took %.1f s: %s", report["took_s"], report.get("findings"))
    if any(not node.get("reached") for node in report["nodes"].values()):
        return interfaces(report), None
    refusals = errors(report)
    if refusals:
        first = refusals[0]
        more = f" (and {len(refusals) - 1} more: `ugro netcheck`)" if len(refusals) > 1 else ""
        return interfaces(report), f"{first['message']}; fix: {first['fix']}{more}"
    return interfaces(report), None
