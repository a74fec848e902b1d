"""`ugro serve up`: a deployment checked, placed, shipped, started and handed to its controller.

Every refusal comes before anything starts: unknown jobs, a job without an adapter, jobs on
different bases, an engine that is not there, no node that fits, a port that is taken on the
node (servectl checks it before it starts the server). If the start fails, the deployment's
record is removed again: nothing is left that claims the node.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ugro.core.cluster import Cluster, Node
from ugro.core.errors import UsageError
from ugro.core.layout import check_name
from ugro.nodes import assets
from ugro.nodes.runner import EventCallback, run_playbook
from ugro.records.deployments import (
    STARTING,
    Deployment,
    DeploymentFiles,
    DeploymentState,
    ServedModel,
    deployments_root,
)
from ugro.records.history import now_iso
from ugro.serve import engines
from ugro.serve.adapters import Base, JobAdapter, common_base, find_adapters
from ugro.serve.placement import choose_node

log = logging.getLogger(__name__)

DEFAULT_PORT = 8000
# Room for activations and the KV cache beside the weights.
_MEMORY_FACTOR = 1.3


@dataclass(frozen=True)
class UpRequest:
    jobs: tuple[str, ...]
    name: str | None = None
    node: str | None = None
    port: int = DEFAULT_PORT
    engine: str = engines.AUTO
    api_key_file: str | None = None
    force: bool = False
    host: str | None = None  # where the server listens: the node's cluster address by default
    max_tokens: int = 512


@dataclass(frozen=True)
class Started:
    deployment: Deployment
    files: DeploymentFiles
    engine_reason: str
    new_key: str | None  # a key made now (shown once), None if given or not needed


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def up(cluster: Cluster, request: UpRequest, *, on_event: EventCallback | None = None) -> Started:
    if not request.jobs:
        raise UsageError("name at least one job to serve (`ugro status` lists them)")
    if request.engine not in engines.ENGINES:
        raise UsageError(f"--engine {request.engine}: expected one of {', '.join(engines.ENGINES)}")
    adapters = find_adapters(cluster, list(request.jobs))
    base = common_base(adapters)
    if any(a.model_id == base.model_id for a in adapters):
        raise UsageError(
            f"job {base.model_id} has its base model's name: the two would share a model id"
        )
    name = check_name(request.name or adapters[0].model_id)
    files = DeploymentFiles(deployments_root(cluster) / name)
    _refuse_existing(files)
    given_key = _read_key_file(request.api_key_file) if request.api_key_file else None
    placement = choose_node(
        cluster, asked=request.node, need_bytes=_need_bytes(base, adapters), force=request.force
    )
    node, facts = placement.node, placement.facts
    choice = engines.choose(request.engine, node.name, facts, adapters)
    host = request.host or node.address
    needs_key = not is_loopback(host)
    key = given_key or (secrets.token_urlsafe(32) if needs_key else None)
    node_dir = f"{node.project_path}/data/deployments/{name}"
    deployment = Deployment(
        name=name,
        node=node.name,
        host=host,
        port=request.port,
        engine=choice.engine,
        base_id=base.model_id,
        models=(
            ServedModel(base.model_id),
            *(ServedModel(a.model_id, a.job_id, a.rank) for a in adapters),
        ),
        node_dir=node_dir,
        needs_key=key is not None,
        created=now_iso(),
    )
    spec = _spec(deployment, base, adapters, facts, key is not None, request.max_tokens)
    if files.dir.exists():
        shutil.rmtree(files.dir)  # a stopped or failed deployment of the same name
    files.write_deployment(deployment)
    files.write_cluster(cluster)
    files.write_state(DeploymentState(STARTING, "starting the server", updated=time.time()))
    if key:
        files.write_key(key)
    try:
        pid = _start(cluster, node, deployment, spec, base, adapters, files, on_event)
    except BaseException:
        shutil.rmtree(files.dir, ignore_errors=True)
        raise
    files.write_state(DeploymentState(STARTING, "loading the models", pid=pid, updated=time.time()))
    files.spawn()
    return Started(deployment, files, choice.why, key if key and not given_key else None)


def _refuse_existing(files: DeploymentFiles) -> None:
    if not files.exists():
        return
    try:
        deployment, state = files.deployment(), files.state()
    except (KeyError, TypeError, ValueError):
        return
    if state.holds_node:
        raise UsageError(
            f"deployment {deployment.name} exists ({state.state} on {deployment.node}): "
            f"`ugro serve down {deployment.name}` first, or --name another"
        )


def _read_key_file(path: str) -> str:
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--api-key-file {path}: {exc.strerror or exc}") from None
    key = text.strip()
    if not key or len(key.splitlines()) != 1 or len(key) < 16 or any(c.isspace() for c in key):
        raise UsageError(f"--api-key-file {path}: expected one line of 16 or more characters")
    return key


def _need_bytes(base: Base, adapters: list[JobAdapter]) -> int:
    weights = 0
    if base.directory is not None:
        weights += sum(p.stat().st_size for p in base.directory.glob("*") if p.is_file())
    weights += sum(p.stat().st_size for a in adapters for p in a.directory.glob("*.safetensors"))
    return int(weights * _MEMORY_FACTOR)


def _spec(
    deployment: Deployment,
    base: Base,
    adapters: list[JobAdapter],
    facts: engines.NodeFacts,
    with_key: bool,
    max_tokens: int,
) -> dict[str, Any]:
    models = f"{deployment.node_dir}/models"
    base_path = f"{models}/base" if base.directory is not None else str(base.hub_name)
    served = [{"model_id": a.model_id, "path": f"{models}/{a.model_id}"} for a in adapters]
    spec: dict[str, Any] = {
        "name": deployment.name,
        "engine": deployment.engine,
        "base_id": base.model_id,
        "base_path": base_path,
        "adapters": served,
        "host": deployment.host,
        "port": deployment.port,
        "key_file": f"{deployment.node_dir}/api_key" if with_key else None,
        "max_tokens_cap": max_tokens,
    }
    if deployment.engine == engines.VLLM:
        spec["vllm_args"] = engines.vllm_arguments(
            base=base_path,
            adapters=[(a["model_id"], a["path"]) for a in served],
            max_rank=max(a.rank for a in adapters),
            host=deployment.host,
            port=deployment.port,
            facts=facts,
        )
    return spec


def _start(
    cluster: Cluster,
    node: Node,
    deployment: Deployment,
    spec: dict[str, Any],
    base: Base,
    adapters: list[JobAdapter],
    files: DeploymentFiles,
    on_event: EventCallback | None,
) -> int | None:
    models = [{"src": str(a.directory), "dest": a.model_id} for a in adapters]
    if base.directory is not None:
        models.append({"src": str(base.directory), "dest": "base"})
    result = run_playbook(
        cluster,
        "serve",
        limit=[node.name],
        extravars={
            "ugro_serve_action": "start",
            "ugro_serve_name": deployment.name,
            "ugro_serve_dir": deployment.node_dir,
            "ugro_serve_spec": spec,
            "ugro_serve_models": models,
            "ugro_serve_server_src": str(assets.project_dir() / "scripts"),
            "ugro_serve_key_file": str(files.key_path) if deployment.needs_key else "",
        },
        on_event=on_event,
    )
    outcome = result.hosts.get(node.name)
    if not result.successful or outcome is None:
        why = outcome.message if outcome and outcome.message else f"playbook {result.status}"
        kind = "unreachable" if outcome and outcome.unreachable else "refused the start"
        raise UsageError(f"{node.name} {kind}: {why} (log: {result.stdout_path})")
    state = result.facts("ugro_serve_state").get(node.name) or {}
    pid = state.get("pid")
    return int(pid) if isinstance(pid, int) else None
