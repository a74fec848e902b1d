"""From the validated schema to the resolved Cluster: every default, path and interpreter filled in.

Paths on the master resolve against the cluster file's directory; a worker's `~` is that
worker's home. The master's ranks write into the master's experiment directory itself, so the
job directory on the master is where `ugro results` and `ugro logs` read.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal

from ugro.config.schema import (
    ClusterConfig,
    EnvironmentSection,
    Hardware,
    PathsSection,
    TrainingSection,
    expand_home,
)
from ugro.config.source import builtin_home, current_user
from ugro.core.cluster import (
    Cluster,
    ClusterPaths,
    DaemonOptions,
    EnvironmentSpec,
    LaunchOptions,
    LoggingOptions,
    Node,
    SlurmOptions,
    SshOptions,
)

LOCAL_CLUSTER_NAME = "local"
# A worker's job directories, under its project (the master's follow paths.experiments).
NODE_EXPERIMENTS = "data/experiments"
# Training defaults for clusters that must work offline (the built-in one, the sandbox): the tiny
# Llama built from a config, on the corpus the training scripts generate.
OFFLINE_TRAINING = {
    "default_model": "tiny-llama",
    "default_dataset": "builtin",
    "default_epochs": 1,
    "default_learning_rate": 0.01,
    "batch_size_per_gpu": 4,
    "gradient_accumulation_steps": 1,
    "max_seq_length": 64,
}


def local_cluster_config() -> ClusterConfig:
    """This machine alone, reached without SSH: what a newcomer's first command runs on."""
    return ClusterConfig.model_validate(
        {
            "cluster": {
                "name": LOCAL_CLUSTER_NAME,
                "description": "This machine alone (the built-in default cluster)",
                "master": {
                    "name": LOCAL_CLUSTER_NAME,
                    "hostname": "localhost",
                    "ip": "127.0.0.1",
                    "user": current_user(),
                    "connection": "local",
                },
            },
            "paths": {"project_root": str(builtin_home())},
            "environment": {"manager": "system"},
            "training": OFFLINE_TRAINING,
        }
    )


def build_cluster(config: ClusterConfig, *, source: Path | None, base_dir: Path) -> Cluster:
    """The Cluster that a validated cluster.yaml describes."""
    paths = _cluster_paths(config.paths, source=source, base_dir=base_dir)
    master = config.cluster.master
    master_home = _local_path(master.paths.home, base_dir) or str(Path.home())
    master_project = _local_path(master.paths.project, base_dir) or str(paths.project_root)
    master_scripts = _local_path(config.paths.scripts or master.paths.scripts, base_dir)
    nodes = [
        _node(
            config,
            name=master.name or master.hostname,
            hostname=master.hostname,
            address=master.ip,
            port=master.port,
            user=master.user,
            rank=0,
            role="master",
            connection=master.connection,
            accelerator=master.accelerator,
            home=master_home,
            project=master_project,
            scripts=master_scripts,
            experiments=str(paths.experiments),
            python=master.python,
            nproc=master.nproc_per_node,
            hardware=master.hardware,
            micro_batch_size=master.micro_batch_size,
        )
    ]
    for worker in sorted(config.workers, key=lambda w: w.rank):
        home = _remote_path(worker.paths.home, f"/home/{worker.user}") or f"/home/{worker.user}"
        project = _remote_path(worker.paths.project, home) or f"{home}/projects/UGRO"
        nodes.append(
            _node(
                config,
                name=worker.name,
                hostname=worker.hostname,
                address=worker.ip,
                port=worker.ssh_port,
                user=worker.user,
                rank=worker.rank,
                role="worker",
                connection="ssh",
                accelerator=worker.accelerator,
                home=home,
                project=project,
                scripts=_remote_path(worker.paths.scripts, home),
                experiments=f"{project}/{NODE_EXPERIMENTS}",
                python=worker.python,
                nproc=worker.nproc_per_node,
                hardware=worker.hardware,
                micro_batch_size=worker.micro_batch_size,
            )
        )
    communication = config.cluster.communication
    return Cluster(
        name=config.cluster.name,
        source=source,
        nodes=tuple(nodes),
        paths=paths,
        description=config.cluster.description,
        location=config.cluster.location,
        ssh=SshOptions(
            identity_file=_local_path(config.ssh.identity_file, base_dir),
            known_hosts=_local_path(config.ssh.known_hosts, base_dir),
            connect_timeout=config.ssh.connect_timeout,
            python_interpreter=config.ssh.python_interpreter,
        ),
        environment=_environment(config.environment, base_dir),
        launch=LaunchOptions(
            rdzv_backend=communication.backend,
            master_port=communication.master_port,
            timeout_seconds=communication.timeout_seconds,
            max_restarts=communication.max_restarts,
            retries=communication.retries,
            retry_backoff_s=communication.retry_backoff_seconds,
            netcheck_max_age_s=communication.netcheck_max_age_hours * 3600.0,
            telemetry_interval_s=config.telemetry.interval_seconds,
            training=training_settings(config.training),
        ),
        logging=LoggingOptions(
            level=config.logging.level,
            format=config.logging.format,
            file=_as_path(_local_path(config.logging.file, base_dir)),
            keep_days=config.logging.keep_days,
            keep_runs=config.logging.keep_runs,
        ),
        daemon=DaemonOptions(
            probe_interval_s=config.daemon.probe_interval_seconds,
            deep_probe_interval_s=config.daemon.deep_probe_interval_seconds,
            disk_min_free_gb=config.daemon.disk_min_free_gb,
            notify_command=tuple(config.notify.command or ()),
            notify_timeout_s=config.notify.timeout_seconds,
            dashboard_host=config.dashboard.host,
            dashboard_port=config.dashboard.port,
            dashboard_with_daemon=config.dashboard.with_daemon,
        ),
        scheduler=config.scheduler,
        slurm=SlurmOptions(
            **{
                **config.slurm.model_dump(),
                # Whom Slurm runs jobs as when cluster.yaml names nobody: who submits them.
                "job_user": config.slurm.job_user or config.cluster.master.user,
            }
        ),
        document=config.model_dump(mode="json"),
    )


def training_settings(training: TrainingSection) -> tuple[tuple[str, Any], ...]:
    """The training keys cluster.yaml sets, in its own terms (lora keys as `lora.<key>`)."""
    settings = [
        (key, value)
        for key, value in training.model_dump(exclude={"lora"}).items()
        if value is not None
    ]
    settings += [
        (f"lora.{key}", value)
        for key, value in training.lora.model_dump().items()
        if value is not None
    ]
    return tuple(settings)


def _node(
    config: ClusterConfig,
    *,
    home: str,
    project: str,
    scripts: str | None,
    python: str | None,
    nproc: int | None,
    hardware: Hardware,
    connection: Literal["local", "ssh"],
    experiments: str,
    **fields: Any,
) -> Node:
    return Node(
        home=home,
        project_path=project,
        scripts_path=scripts or f"{project}/scripts",
        experiments_path=experiments,
        python=_node_python(config.environment, project, python, home, connection),
        nproc_per_node=nproc,
        hardware=hardware.model_dump(exclude_none=True),
        connection=connection,
        **fields,
    )


def _environment(env: EnvironmentSection, base_dir: Path) -> EnvironmentSpec:
    declared = {"python": env.python_version, "torch": env.torch_version, "cuda": env.cuda_version}
    source = env.requirements if env.manager == "venv" else env.pixi_manifest_dir
    return EnvironmentSpec(
        manager=env.manager,
        conda_env=env.conda_env,
        source=_local_path(source, base_dir),
        pixi=env.pixi,
        base_python=env.base_python,
        wheelhouse=env.wheelhouse,
        expected_versions={key: value for key, value in declared.items() if value},
    )


def _node_python(
    env: EnvironmentSection, project: str, override: str | None, home: str, connection: str
) -> str:
    if override:
        return expand_home(override, home)
    if env.manager == "pixi":
        return f"{project}/.pixi/envs/{env.conda_env}/bin/python"
    if env.manager == "venv":
        venv = expand_home(env.path or ".venv", home)
        if not venv.startswith("/"):
            venv = f"{project}/{venv}"
        return f"{venv}/bin/python"
    if env.python:
        return expand_home(env.python, home)
    # `system` without an interpreter: on the master, the one running ugro (and Ansible, which
    # shares its environment); elsewhere, the distribution's.
    return sys.executable if connection == "local" else "/usr/bin/python3"


def _remote_path(value: str | None, home: str) -> str | None:
    """A path on another machine: `~` is that machine's home (the schema checked it is absolute)."""
    return None if value is None else expand_home(value, home)


def _local_path(value: str | None, base_dir: Path) -> str | None:
    if value is None:
        return None
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        path = base_dir / path
    return str(path.resolve())


def _as_path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def _cluster_paths(section: PathsSection, *, source: Path | None, base_dir: Path) -> ClusterPaths:
    if section.project_root:
        root = Path(_local_path(section.project_root, base_dir) or base_dir)
    elif source is not None and source.parent.name == "config":
        # The seed's layout: <project>/config/cluster.yaml beside <project>/data and <project>/logs.
        root = source.parent.parent
    else:
        root = base_dir
    data = Path(_local_path(section.data, base_dir) or root / "data")
    return ClusterPaths(
        project_root=root,
        data=data,
        logs=Path(_local_path(section.logs, base_dir) or root / "logs"),
        experiments=Path(_local_path(section.experiments, base_dir) or data / "experiments"),
        config=_as_path(_local_path(section.config, base_dir)),
    )
