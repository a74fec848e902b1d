"""`ugro netcheck` and the launch's network preflight: what the job's nodes' network can do.

Each node runs scripts/ugro_netcheck.py (read from stdin by its training interpreter, over SSH
as every other command reaches it): its route to the lead, the lead's rendezvous port, a stream
between every pair of nodes on ports the kernel picks (as gloo's and NCCL's are), and an
all-reduce sweep over the real backend. Here: starting them, reading what they found, naming
what is wrong with the fix, and keeping the result (~/.cache/ugro/netcheck/, keyed by the
nodes' addresses) so that a launch runs the check only when it has none recent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import selectors
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ugro import assets
from ugro.cluster import Cluster, Node
from ugro.inventory import ssh_command, ssh_destination
from ugro.state import read_json_dict, write_json_atomic

log = logging.getLogger(__name__)

AGENT = ("scripts", "ugro_netcheck.py")
# Every agent is done well within this: 45 s for every node to join (a slow one imports torch
# slowly), then waits of 10 s at most and a sweep of 4 s.
TIMEOUT_S = 100.0
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


def check(cluster: Cluster, names: Sequence[str]) -> dict[str, Any]:
    """Run the check on these nodes (the first leads) and keep its report."""
    nodes = [cluster.node(n) for n in names]
    script = assets.project_dir().joinpath(*AGENT).read_bytes()
    began = time.monotonic()
    # The lead first: it picks the rendezvous port (the first free one from the cluster's, as a
    # launch does) and says which on its first line; the others are started with it.
    lead = _start(cluster, nodes[0], 0, nodes, cluster.launch.master_port, script)
    port = _announced_port(lead, began)
    if port is None:
        reports = {nodes[0].name: _read_agent(nodes[0], lead, began)}
        reports |= {
            n.name: {"reached": True, "problems": ["not checked: the lead failed"]}
            for n in nodes[1:]
        }
        port = cluster.launch.master_port
    else:
        running = [lead] + [
            _start(cluster, node, rank, nodes, port, script)
            for rank, node in enumerate(nodes)
            if rank
        ]
        _wait_for_agents(nodes, running, began)
        reports = {
            node.name: _read_agent(node, process, began)
            for node, process in zip(nodes, running, strict=True)
        }
    report = _assemble(cluster, nodes, port, reports, time.monotonic() - began)
    if all(node["reached"] for node in report["nodes"].values()):
        # A node that did not answer says nothing about the network: not worth keeping.
        write_json_atomic(cache_path(cluster, names), report)
    return report


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
    if node.connection == "local":
        return remote
    return [*ssh_command(cluster, node), ssh_destination(node), "--", shlex.join(remote)]


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


def interfaces(report: Mapping[str, Any]) -> dict[str, str]:
    """Each node's interface towards the lead, for GLOO_SOCKET_IFNAME and NCCL_SOCKET_IFNAME."""
    return {
        name: str(node["interface"])
        for name, node in (report.get("nodes") or {}).items()
        if isinstance(node, dict) and node.get("interface")
    }


def errors(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [f for f in report.get("findings") or [] if f.get("severity") == "error"]


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
