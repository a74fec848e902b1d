"""Which node serves: the one asked for, else the healthiest idle node with enough memory.

Idle: no job runs there and no deployment holds it. Healthiest: the latest verdict
(data/cluster_state.json) first, then the most free memory, from a fresh look at each candidate
over SSH (its training interpreter: a CUDA GPU and its free memory, else available RAM, and
whether vllm is there).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ugro.core.cluster import Cluster, Node
from ugro.core.errors import UsageError
from ugro.core.files import read_json_dict
from ugro.nodes.ssh import on_node
from ugro.records.deployments import serving_nodes
from ugro.records.history import Jobs
from ugro.serve.engines import NodeFacts

# Sent to the node's training interpreter on stdin: nothing of ugro's is needed there.
_LOOK = """
import importlib.util, json
out = {"cuda": False, "vllm": importlib.util.find_spec("vllm") is not None}
try:
    import torch
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        out.update(cuda=True, free_bytes=free, total_bytes=total, gpu=torch.cuda.get_device_name(0))
except Exception as exc:
    out["torch_error"] = str(exc)[:200]
if not out["cuda"]:
    fields = {}
    with open("/proc/meminfo") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            fields[key] = int(value.split()[0]) * 1024
    out.update(free_bytes=fields.get("MemAvailable", 0), total_bytes=fields.get("MemTotal", 0))
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Placement:
    node: Node
    facts: NodeFacts


def look(cluster: Cluster, node: Node, timeout: float = 60) -> NodeFacts:
    """A fresh look at `node` (raises UsageError naming it when it cannot be reached)."""
    argv = on_node(cluster, node, [node.python, "-"])
    try:
        done = subprocess.run(
            argv, input=_LOOK, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise UsageError(f"{node.name} did not answer within {timeout:.0f}s") from None
    except OSError as exc:  # the master's own interpreter (a local node) is missing
        raise UsageError(f"{node.name}: cannot run {argv[0]}: {exc.strerror}") from None
    try:
        data = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise UsageError(f"{node.name} cannot be reached or has no Python: {why}") from None
    return NodeFacts(
        cuda=bool(data.get("cuda")),
        vllm=bool(data.get("vllm")),
        free_bytes=int(data.get("free_bytes") or 0),
        total_bytes=int(data.get("total_bytes") or 0),
        gpu=data.get("gpu"),
    )


def busy_nodes(cluster: Cluster) -> dict[str, str]:
    """{node: why it is busy}: a running job, or a deployment."""
    busy: dict[str, str] = {}
    jobs = Jobs(cluster)
    for record in jobs.records().values():
        if record.active:
            for name in jobs.nodes(record):
                busy.setdefault(name, f"runs {record.job_id}")
    for name, deployments in serving_nodes(cluster).items():
        busy.setdefault(name, f"serves {', '.join(deployments)}")
    return busy


def choose_node(
    cluster: Cluster, *, asked: str | None, need_bytes: int, force: bool = False
) -> Placement:
    busy = busy_nodes(cluster)
    if asked is not None:
        node = cluster.node(asked)
        if node.name in busy and not force:
            raise UsageError(f"{node.name} {busy[node.name]} (--force serves beside it)")
        facts = look(cluster, node)
        _check_memory(node.name, facts, need_bytes)
        return Placement(node, facts)
    candidates = [n for n in cluster.nodes if n.name not in busy]
    if not candidates:
        reasons = "; ".join(f"{name} {why}" for name, why in busy.items())
        raise UsageError(f"no idle node to serve on: {reasons} (--node NAME --force to share one)")
    with ThreadPoolExecutor(max_workers=len(candidates)) as pool:
        looks = list(pool.map(lambda n: _try_look(cluster, n), candidates))
    verdicts = _verdicts(cluster)
    fitting = []
    problems = []
    for node, looked in zip(candidates, looks, strict=True):
        if isinstance(looked, str):
            problems.append(looked)
            continue
        facts = looked
        if facts.free_bytes < need_bytes:
            problems.append(_too_small(node.name, facts, need_bytes))
            continue
        fitting.append(
            (verdicts.get(node.name) is not False, facts.cuda, facts.free_bytes, node, facts)
        )
    if not fitting:
        raise UsageError("no node can serve: " + "; ".join(problems))
    fitting.sort(key=lambda item: (item[0], item[1], item[2]), reverse=True)
    return Placement(fitting[0][3], fitting[0][4])


def _try_look(cluster: Cluster, node: Node) -> NodeFacts | str:
    try:
        return look(cluster, node)
    except UsageError as exc:
        return exc.message


def _check_memory(node: str, facts: NodeFacts, need_bytes: int) -> None:
    if facts.free_bytes < need_bytes:
        raise UsageError(_too_small(node, facts, need_bytes))


def _too_small(node: str, facts: NodeFacts, need_bytes: int) -> str:
    where = "GPU memory" if facts.cuda else "memory"
    return (
        f"{node} has {facts.free_bytes / 2**30:.1f} GiB of free {where}; the model needs "
        f"about {need_bytes / 2**30:.1f} GiB"
    )


def _verdicts(cluster: Cluster) -> Mapping[str, bool]:
    """{node: healthy} from the latest `ugro health` (nothing known: no preference)."""
    state = read_json_dict(cluster.paths.cluster_state)
    nodes = state.get("nodes")
    if not isinstance(nodes, dict):
        return {}
    return {
        str(name): entry.get("status") == "healthy"
        for name, entry in nodes.items()
        if isinstance(entry, dict) and "status" in entry
    }
