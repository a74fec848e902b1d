"""A deployment (`ugro serve up`) seen from outside: its files, and a handle on its controller.

A deployment serves one base model with jobs' adapters from one node. Its controller on the
master (`python -m ugro.serve`, one per deployment, as a job has one) starts the server, watches
it over SSH, restarts it when it dies and tears it down when asked. Commands, the daemon, the
queue and the dashboard read its files here, never the node:

    data/deployments/<name>/deployment.json  what it serves, where (Deployment)
    data/deployments/<name>/cluster.json     the cluster as it was deployed on
    data/deployments/<name>/api_key          the bearer key (0600), when it listens beyond loopback
    data/deployments/<name>/state.json       what its controller sees now (DeploymentState)
    data/deployments/<name>/stop             a user's `ugro serve down`
    data/deployments/<name>/lock             held (flock) by the live controller
    data/deployments/<name>/controller.log   its log
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ugro.core.cluster import Cluster
from ugro.core.files import json_float, json_int, json_mapping, read_json_dict, write_json_atomic
from ugro.core.processes import lock_held, spawn_detached

log = logging.getLogger(__name__)

STARTING, SERVING, RESTARTING, LOST = "starting", "serving", "restarting", "lost"
STOPPING, STOPPED, FAILED = "stopping", "stopped", "failed"
# A node is busy serving while its deployment is in one of these (a failed or stopped one has
# been torn down; a lost one may come back with its node).
HOLDS_NODE = (STARTING, SERVING, RESTARTING, LOST, STOPPING)


@dataclass(frozen=True)
class ServedModel:
    """A model id the deployment answers to: the base (job_id None) or a job's adapter."""

    model_id: str
    job_id: str | None = None
    rank: int | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServedModel:
        return cls(str(data.get("model_id", "?")), data.get("job_id"), json_int(data.get("rank")))


@dataclass(frozen=True)
class Deployment:
    name: str
    node: str
    host: str  # the address the server listens on
    port: int
    engine: str  # "transformers" (UGRO's own server) or "vllm"
    base_id: str
    models: tuple[ServedModel, ...]
    node_dir: str  # the deployment's directory on the node
    needs_key: bool
    created: str

    @property
    def url(self) -> str:
        """The OpenAI base URL (clients append /chat/completions and so on)."""
        host = self.host
        try:
            if ipaddress.ip_address(host).version == 6:
                host = f"[{host}]"
        except ValueError:
            pass
        return f"http://{host}:{self.port}/v1"

    @property
    def model_ids(self) -> list[str]:
        return [m.model_id for m in self.models]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["models"] = [asdict(m) for m in self.models]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Deployment:
        return cls(
            name=str(data["name"]),
            node=str(data["node"]),
            host=str(data["host"]),
            port=int(data["port"]),
            engine=str(data.get("engine", "transformers")),
            base_id=str(data.get("base_id", "?")),
            models=tuple(ServedModel.from_json(m) for m in data.get("models", ())),
            node_dir=str(data["node_dir"]),
            needs_key=bool(data.get("needs_key", True)),
            created=str(data.get("created", "")),
        )


@dataclass(frozen=True)
class DeploymentState:
    state: str = STARTING
    message: str = ""
    pid: int | None = None  # the server's, on its node
    serving_since: float | None = None  # time.time() on the master
    restarts: int = 0
    updated: float = 0.0
    stats: Mapping[str, Any] = field(default_factory=dict)  # the server's /ugro/stats

    @property
    def holds_node(self) -> bool:
        return self.state in HOLDS_NODE

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["stats"] = dict(self.stats)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeploymentState:
        return cls(
            state=str(data.get("state", STARTING)),
            message=str(data.get("message", "")),
            pid=json_int(data.get("pid")),
            serving_since=json_float(data.get("serving_since")),
            restarts=json_int(data.get("restarts")) or 0,
            updated=json_float(data.get("updated")) or 0.0,
            stats=json_mapping(data.get("stats")),
        )


def deployments_root(cluster: Cluster) -> Path:
    return cluster.paths.data / "deployments"


class DeploymentFiles:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def deployment_path(self) -> Path:
        return self.dir / "deployment.json"

    @property
    def cluster_path(self) -> Path:
        return self.dir / "cluster.json"

    @property
    def key_path(self) -> Path:
        return self.dir / "api_key"

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    @property
    def stop_path(self) -> Path:
        return self.dir / "stop"

    @property
    def lock_path(self) -> Path:
        return self.dir / "lock"

    @property
    def log_path(self) -> Path:
        return self.dir / "controller.log"

    def exists(self) -> bool:
        return self.deployment_path.is_file()

    def deployment(self) -> Deployment:
        return Deployment.from_json(read_json_dict(self.deployment_path))

    def write_deployment(self, deployment: Deployment) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_json_atomic(self.deployment_path, deployment.to_json())

    def write_cluster(self, cluster: Cluster) -> None:
        write_json_atomic(self.cluster_path, cluster.to_json())
        self.cluster_path.chmod(0o600)

    def cluster(self) -> Cluster | None:
        data = read_json_dict(self.cluster_path)
        try:
            return Cluster.from_json(data) if data else None
        except (KeyError, TypeError, ValueError):
            return None

    def state(self) -> DeploymentState:
        return DeploymentState.from_json(read_json_dict(self.state_path))

    def write_state(self, state: DeploymentState) -> None:
        write_json_atomic(self.state_path, state.to_json())

    def write_key(self, key: str) -> None:
        descriptor = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(key + "\n")

    def key(self) -> str | None:
        try:
            return self.key_path.read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    def request_stop(self) -> None:
        write_json_atomic(self.stop_path, {"at": time.time()})

    def stop_requested(self) -> bool:
        return self.stop_path.exists()

    # -- the controller process -----------------------------------------------------------------
    def alive(self) -> bool:
        return lock_held(self.lock_path)

    def spawn(self) -> int:
        """Start the deployment's controller, detached; a second one sees the lock and leaves."""
        process = spawn_detached([sys.executable, "-m", "ugro.serve", str(self.dir)], self.log_path)
        log.info("deployment controller for %s started (pid %s)", self.name, process.pid)
        return process.pid

    def ensure(self) -> bool:
        """Start the controller again if the deployment still needs one and none runs."""
        if not self.exists() or self.alive() or self.state().state in (STOPPED, FAILED):
            return False
        self.spawn()
        return True


def all_deployments(cluster: Cluster) -> list[DeploymentFiles]:
    root = deployments_root(cluster)
    if not root.is_dir():
        return []
    found = [DeploymentFiles(d) for d in sorted(root.iterdir()) if d.is_dir()]
    return [d for d in found if d.exists()]


def serving_nodes(cluster: Cluster) -> dict[str, list[str]]:
    """{node: [deployment names]} for every deployment that holds its node."""
    serving: dict[str, list[str]] = {}
    for files in all_deployments(cluster):
        try:
            deployment, state = files.deployment(), files.state()
        except (KeyError, TypeError, ValueError):
            continue
        if state.holds_node:
            serving.setdefault(deployment.node, []).append(deployment.name)
    return serving
