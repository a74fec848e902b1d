"""The resolved cluster: one plain, frozen, serialisable description of everything commands need.

`ugro.config` validates cluster.yaml and produces a `Cluster`; its cache stores `to_json()` as it
is and reads it back with `from_json()`; `ugro.inventory` is a pure function of it. Nothing here
imports pydantic, YAML or Ansible, so a command that finds its cluster in the cache starts fast.

Data moves one way: CLI -> config -> Cluster -> inventory -> runner -> roles -> experiment dir.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ugro.core.errors import unknown_node

Role = Literal["master", "worker"]
Connection = Literal["local", "ssh"]


@dataclass(frozen=True)
class Node:
    """One machine, with every path and default resolved (paths are the node's own)."""

    name: str
    hostname: str
    address: str  # an IP address (v4 or v6) or a host name, as cluster.yaml gives it
    port: int
    user: str
    rank: int
    role: Role
    connection: Connection
    accelerator: str
    home: str
    project_path: str
    scripts_path: str
    # Where this node's job directories live: the master's is the master's experiment
    # directory itself, so its ranks write straight into what `ugro results` reads.
    experiments_path: str
    python: str
    nproc_per_node: int | None
    hardware: Mapping[str, Any] = field(default_factory=dict)
    # `--balance manual`: each of the node's ranks' samples per micro-step (cluster.yaml).
    micro_batch_size: int | None = None


@dataclass(frozen=True)
class ClusterPaths:
    """Where ugro keeps its own files on the master (the seed's data/ and logs/ layout)."""

    project_root: Path
    data: Path
    logs: Path
    experiments: Path
    # The user's config directory (paths.config): its training_defaults.yaml is what jobs and
    # `ugro sync` use. None: <project_root>/config when it holds one, else ugro's own.
    config: Path | None = None

    @property
    def cluster_state(self) -> Path:
        return self.data / "cluster_state.json"

    @property
    def job_history(self) -> Path:
        return self.data / "job_history.jsonl"

    @property
    def runs(self) -> Path:
        return self.data / "runs"


@dataclass(frozen=True)
class SshOptions:
    identity_file: str | None = None
    known_hosts: str | None = None
    connect_timeout: int = 5
    # The interpreter Ansible's modules run under on SSH nodes (not the training environment).
    python_interpreter: str = "/usr/bin/python3"


@dataclass(frozen=True)
class EnvironmentSpec:
    """How each node's training environment is made (`ugro sync`) and what it should run."""

    manager: Literal["pixi", "venv", "system"] = "system"
    conda_env: str = "main"
    # On the master: a requirements file (venv) or a pixi manifest directory; None: ugro's own.
    source: str | None = None
    pixi: str = "~/.pixi/bin/pixi"
    base_python: str = "/usr/bin/python3"
    wheelhouse: str | None = None
    # The versions cluster.yaml declares (python, torch, cuda); health warns where a node differs.
    expected_versions: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LaunchOptions:
    """What cluster.yaml says about starting jobs."""

    rdzv_backend: Literal["c10d", "static"] = "c10d"
    master_port: int = 29500
    timeout_seconds: int = 300
    max_restarts: int = 0
    retries: int = 0
    retry_backoff_s: float = 5.0  # the first retry's wait; it doubles with each one
    telemetry_interval_s: float = 1.0  # each node's telemetry while a job runs; 0: none
    netcheck_max_age_s: float = 24 * 3600.0  # a launch's network check is kept this long
    # The training section's keys that cluster.yaml sets, in its own terms ("default_model",
    # "lora.rank"); ugro.launch maps them to train_production.py's options.
    training: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class LoggingOptions:
    level: str = "DEBUG"
    format: str = "[%(asctime)s] %(name)s - %(levelname)s - %(message)s"
    file: Path | None = None  # ugro's own log; None: <logs>/agent.log
    keep_days: int = 7
    keep_runs: int = 100  # Ansible runs kept under data/runs/


@dataclass(frozen=True)
class DaemonOptions:
    """What cluster.yaml says about the daemon: health probes and notifications."""

    probe_interval_s: float = 60.0
    deep_probe_interval_s: float = 3600.0
    disk_min_free_gb: float = 5.0
    notify_command: tuple[str, ...] = ()  # an argv; empty: no notifications
    notify_timeout_s: int = 30
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8265
    dashboard_with_daemon: bool = True  # the daemon serves the dashboard while it runs


@dataclass(frozen=True)
class SlurmOptions:
    """What cluster.yaml says about Slurm (roles/ugro_slurm; ugro.config.schema.SlurmSection)."""

    cluster_name: str = "ugro"
    partition: str = "ugro"
    job_user: str = "root"  # resolved: the master's user unless cluster.yaml names one
    services: str = "systemd"  # or "direct": started by pid file, where PID 1 is not systemd
    install: bool = True
    memory_margin_mb: int = 1024
    controller_port: int = 6817
    node_port: int = 6818


@dataclass(frozen=True)
class Cluster:
    name: str
    source: Path | None  # None: the built-in local cluster
    nodes: tuple[Node, ...]
    paths: ClusterPaths
    description: str | None = None  # shown with the cluster's name (`ugro inventory`)
    location: str | None = None
    ssh: SshOptions = SshOptions()
    environment: EnvironmentSpec = EnvironmentSpec()
    launch: LaunchOptions = LaunchOptions()
    logging: LoggingOptions = LoggingOptions()
    daemon: DaemonOptions = DaemonOptions()
    scheduler: str = "ugro"  # who starts jobs on the nodes: "ugro", or "slurm"
    slurm: SlurmOptions = SlurmOptions()
    # The validated cluster.yaml (defaults filled in): what a job's config.json records.
    document: Mapping[str, Any] = field(default_factory=dict)

    @property
    def master(self) -> Node:
        return self.nodes[0]

    @property
    def workers(self) -> tuple[Node, ...]:
        return self.nodes[1:]

    @property
    def node_names(self) -> list[str]:
        return [node.name for node in self.nodes]

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise unknown_node(self.describe(), name, self.node_names)

    def describe(self) -> str:
        return str(self.source) if self.source else "the built-in local cluster"

    @property
    def agent_log(self) -> Path:
        return self.logging.file or self.paths.logs / "agent.log"

    # -- serialisation (the cache's format) ------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = _jsonable(asdict(self))
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Cluster:
        """The inverse of to_json; raises KeyError/TypeError/ValueError on a foreign shape."""
        paths = data["paths"]
        logging = dict(data["logging"])
        launch = dict(data["launch"])
        return cls(
            name=str(data["name"]),
            source=_path(data["source"]),
            description=data["description"],
            location=data["location"],
            nodes=tuple(Node(**node) for node in data["nodes"]),
            paths=ClusterPaths(
                project_root=Path(paths["project_root"]),
                data=Path(paths["data"]),
                logs=Path(paths["logs"]),
                experiments=Path(paths["experiments"]),
                config=_path(paths["config"]),
            ),
            ssh=SshOptions(**data["ssh"]),
            environment=EnvironmentSpec(**data["environment"]),
            launch=LaunchOptions(
                **{**launch, "training": tuple((str(k), v) for k, v in launch["training"])}
            ),
            logging=LoggingOptions(**{**logging, "file": _path(logging["file"])}),
            daemon=DaemonOptions(
                **{**data["daemon"], "notify_command": tuple(data["daemon"]["notify_command"])}
            ),
            scheduler=str(data["scheduler"]),
            slurm=SlurmOptions(**data["slurm"]),
            document=dict(data["document"]),
        )


def _path(value: Any) -> Path | None:
    return None if value is None else Path(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
