"""cluster.yaml: where it is found, how it is validated, and the resolved cluster it describes.

The schema is the seed's (cluster/master/communication, workers, paths, training, environment,
logging) plus what real use needs (`ssh`, per-node `accelerator` and `python`,
`environment.manager`).
Every error names the file, the line and the field: `cluster.yaml:12: workers[0].rank: ...`.
No Ansible here: `ugro.inventory` turns the resolved cluster into an inventory.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from ugro.errors import ConfigError, unknown_node
from ugro.paths import ENV_REFERENCE, HOME_ENV, ClusterPaths, locate_config

MAX_CONFIG_BYTES = 1 << 20
# A composed YAML graph bigger than this is an alias bomb, not a cluster description.
MAX_YAML_NODES = 50_000
LOCAL_CLUSTER_NAME = "local"
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

# --- Value checks -------------------------------------------------------------------------------
# Names end up in argv lists, file names and Ansible host names. None of them may carry shell or
# option syntax, so each is held to a conservative character set and may not start with '-'.

_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_HOST_LABEL}(?:\.{_HOST_LABEL})*")
_USER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_ENV_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def _node_name(value: str) -> str:
    if not _NODE_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid node name; expected 1-63 letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return value


def _hostname(value: str) -> str:
    if not _HOSTNAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid host name; expected a DNS name like gpu1")
    return value


def _address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if _HOSTNAME.fullmatch(value):
        return value
    raise ValueError(f"{value!r} is not an IP address or host name")


def _user_name(value: str) -> str:
    if not _USER_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid user name; expected letters, digits, '_', '.', '-', "
            "starting with a letter or '_'"
        )
    return value


def _env_name(value: str) -> str:
    if not _ENV_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid environment name")
    return value


def _path(value: str) -> str:
    if not value or any(c in value for c in "\0\n\r"):
        raise ValueError(f"{value!r} is not a usable path")
    return value


NodeName = Annotated[str, AfterValidator(_node_name)]
HostName = Annotated[str, AfterValidator(_hostname)]
Address = Annotated[str, AfterValidator(_address)]
UserName = Annotated[str, AfterValidator(_user_name)]
EnvName = Annotated[str, AfterValidator(_env_name)]
PathStr = Annotated[str, AfterValidator(_path)]
Port = Annotated[int, Field(ge=1, le=65535)]
Accelerator = Literal["cuda", "cpu", "auto"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- The schema ---------------------------------------------------------------------------------


class Hardware(_Model):
    gpu_model: str | None = None
    gpu_count: Annotated[int, Field(ge=0, le=64)] | None = None
    vram_gb: Annotated[float, Field(ge=0)] | None = None
    cpu_cores: Annotated[int, Field(ge=1)] | None = None
    ram_gb: Annotated[float, Field(ge=0)] | None = None


class NodePaths(_Model):
    home: PathStr | None = None
    project: PathStr | None = None
    scripts: PathStr | None = None


class MasterSection(_Model):
    hostname: HostName
    ip: Address
    port: Port = 22
    user: UserName
    name: NodeName | None = None  # inventory name; defaults to hostname
    # ugro runs on the master, so by default Ansible reaches it without SSH.
    connection: Literal["local", "ssh"] = "local"
    accelerator: Accelerator = "auto"
    python: PathStr | None = None
    nproc_per_node: Annotated[int, Field(ge=1, le=64)] | None = None
    hardware: Hardware = Hardware()
    paths: NodePaths = NodePaths()


class CommunicationSection(_Model):
    backend: Literal["c10d", "static"] = "c10d"
    master_port: Port = 29500
    # How long a rank waits for its peers (the process-group timeout) before failing.
    timeout_seconds: Annotated[int, Field(ge=1, le=86400)] = 300
    # torchrun --max-restarts: how often a failed worker group is restarted before giving up.
    max_restarts: Annotated[int, Field(ge=0, le=100)] = 0


class ClusterSection(_Model):
    name: str = "UGRO cluster"
    location: str | None = None
    description: str | None = None
    master: MasterSection
    communication: CommunicationSection = CommunicationSection()


class WorkerSection(_Model):
    name: NodeName
    hostname: HostName
    ip: Address
    user: UserName
    ssh_port: Port = 22
    rank: Annotated[int, Field(ge=0)]
    accelerator: Accelerator = "auto"
    python: PathStr | None = None
    nproc_per_node: Annotated[int, Field(ge=1, le=64)] | None = None
    hardware: Hardware = Hardware()
    paths: NodePaths = NodePaths()


class PathsSection(_Model):
    project_root: PathStr | None = None
    scripts: PathStr | None = None
    config: PathStr | None = None
    data: PathStr | None = None
    logs: PathStr | None = None
    experiments: PathStr | None = None


class LoraSection(_Model):
    rank: Annotated[int, Field(ge=1)] = 16
    alpha: Annotated[float, Field(gt=0)] = 32
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
    target_modules: list[str] = ["q_proj", "v_proj"]


class TrainingSection(_Model):
    default_model: str = "unsloth/tinyllama-bnb-4bit"
    default_dataset: str = "wikitext"
    default_epochs: Annotated[int, Field(ge=1)] = 1
    default_learning_rate: Annotated[float, Field(gt=0)] = 0.0002
    batch_size_per_gpu: Annotated[int, Field(ge=1)] = 1
    gradient_accumulation_steps: Annotated[int, Field(ge=1)] = 8
    max_seq_length: Annotated[int, Field(ge=8)] = 2048
    lora: LoraSection = LoraSection()


class EnvironmentSection(_Model):
    # How each node's Python environment is made and found:
    #   pixi:   <node project>/.pixi/envs/<conda_env>/bin/python (the seed's setup)
    #   venv:   <path>/bin/python, path absolute or relative to the node's project
    #   system: `python`, an interpreter that is already there
    manager: Literal["pixi", "venv", "system"] = "pixi"
    conda_env: EnvName = "main"  # the seed's name for the pixi environment
    path: PathStr | None = None
    python: PathStr | None = None
    # What `ugro sync` installs. venv: a requirements file (default scripts/requirements.txt);
    # pixi: the directory holding pixi.toml and pixi.lock (default the project root).
    requirements: PathStr | None = None
    pixi_manifest_dir: PathStr | None = None
    pixi: PathStr = "~/.pixi/bin/pixi"
    # The interpreter a venv is created from on each node, and an optional wheel directory
    # (on each node) for air-gapped installs.
    base_python: PathStr = "/usr/bin/python3"
    wheelhouse: PathStr | None = None
    # What the nodes are expected to run; health warns where a node differs.
    python_version: str | None = None
    torch_version: str | None = None
    cuda_version: str | None = None


class LoggingSection(_Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    format: str = "[%(asctime)s] %(name)s - %(levelname)s - %(message)s"
    file: PathStr | None = None
    keep_days: Annotated[int, Field(ge=0)] = 7


class SshSection(_Model):
    identity_file: PathStr | None = None
    known_hosts: PathStr | None = None
    connect_timeout: Annotated[int, Field(ge=1, le=300)] = 5
    # The interpreter Ansible's modules run under on SSH nodes (not the training environment).
    python_interpreter: PathStr = "/usr/bin/python3"


class ClusterConfig(_Model):
    cluster: ClusterSection
    workers: list[WorkerSection] = []
    paths: PathsSection = PathsSection()
    training: TrainingSection = TrainingSection()
    environment: EnvironmentSection = EnvironmentSection()
    logging: LoggingSection = LoggingSection()
    ssh: SshSection = SshSection()


# --- The resolved cluster -----------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """One machine of the cluster, with every path and default resolved."""

    name: str
    hostname: str
    address: str
    port: int
    user: str
    rank: int
    role: Literal["master", "worker"]
    connection: Literal["local", "ssh"]
    accelerator: str
    home: str
    project_path: str
    scripts_path: str
    python: str
    nproc_per_node: int | None
    hardware: dict[str, Any]


@dataclass(frozen=True)
class Cluster:
    name: str
    source: Path | None  # None: the built-in local cluster
    config: ClusterConfig
    nodes: tuple[Node, ...]
    paths: ClusterPaths
    ssh_identity_file: str | None
    ssh_known_hosts: str | None
    # On the master: what `ugro sync` ships (a requirements file, or a pixi manifest directory);
    # None means ugro's own scripts/requirements.txt (venv) or the project root (pixi).
    env_source: str | None = None

    @property
    def master(self) -> Node:
        return self.nodes[0]

    @property
    def workers(self) -> tuple[Node, ...]:
        return self.nodes[1:]

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise unknown_node(self.describe(), name, [n.name for n in self.nodes])

    def describe(self) -> str:
        return str(self.source) if self.source else "the built-in local cluster"

    def training_options(self) -> tuple[tuple[str, Any], ...]:
        """cluster.yaml's training section as train_production.py's options, with the rendezvous
        timeout. Only what the file sets: the rest comes from config/training_defaults.yaml on
        the nodes."""
        training = self.config.training
        options = [
            (flag, getattr(training, key))
            for key, flag in _TRAINING_FLAGS.items()
            if key in training.model_fields_set
        ]
        options += [
            (flag, getattr(training.lora, key))
            for key, flag in _LORA_FLAGS.items()
            if key in training.lora.model_fields_set
        ]
        options.append(("--ddp-timeout", self.config.cluster.communication.timeout_seconds))
        return tuple(options)


_TRAINING_FLAGS = {
    "default_model": "--model",
    "default_dataset": "--dataset",
    "default_epochs": "--epochs",
    "default_learning_rate": "--lr",
    "batch_size_per_gpu": "--batch-size",
    "gradient_accumulation_steps": "--grad-accum",
    "max_seq_length": "--max-seq-length",
}
_LORA_FLAGS = {
    "rank": "--lora-rank",
    "alpha": "--lora-alpha",
    "dropout": "--lora-dropout",
    "target_modules": "--target-modules",
}


# --- Loading ------------------------------------------------------------------------------------


def load_cluster(explicit: str | os.PathLike[str] | None = None) -> Cluster:
    """The cluster named by --config / UGRO_CONFIG / the search path, or the built-in one."""
    path = locate_config(explicit)
    if path is None:
        return local_cluster()
    return load_cluster_file(path)


def local_cluster() -> Cluster:
    """This machine alone, reached without SSH: what a newcomer's first command runs on."""
    home = os.environ.get(HOME_ENV) or str(Path.home() / ".local" / "share" / "ugro")
    config = ClusterConfig.model_validate(
        {
            "cluster": {
                "name": LOCAL_CLUSTER_NAME,
                "description": "This machine alone (the built-in default cluster)",
                "master": {
                    "name": LOCAL_CLUSTER_NAME,
                    "hostname": "localhost",
                    "ip": "127.0.0.1",
                    "user": _current_user(),
                    "connection": "local",
                },
            },
            "paths": {"project_root": home},
            "environment": {"manager": "system"},
            "training": OFFLINE_TRAINING,
        }
    )
    return resolve(config, source=None, base_dir=Path(home))


def _current_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "root" if os.geteuid() == 0 else "ugro"


# --- Loading and validating ---------------------------------------------------------------------


def load_cluster_file(path: Path) -> Cluster:
    text = _read_text(path)
    root = _compose(path, text)
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}:1: the file must be a mapping with a 'cluster' section, "
            f"not {type(data).__name__}"
        )
    lines = _LineFinder(root)
    data = _expand_env(path, lines, data, ())
    try:
        config = ClusterConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(path, lines, exc)) from None
    problems = list(_semantic_problems(config))
    if problems:
        loc, message = problems[0]
        raise ConfigError(f"{path}:{lines.line(loc)}: {_dotted(loc)}: {message}")
    return resolve(config, source=path, base_dir=path.parent)


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {size} bytes is too large for a cluster file (limit 1 MiB)")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; expected a cluster.yaml") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; expected a cluster.yaml file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied; the file must be readable") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _compose(path: Path, text: str) -> yaml.Node | None:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = exc.problem or "invalid YAML"
        raise ConfigError(f"{path}:{line}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {exc}") from None
    _check_graph(path, root)
    return root


def _check_graph(path: Path, root: yaml.Node | None) -> None:
    """Refuse duplicate keys (YAML silently keeps the last) and alias bombs."""
    visited = 0
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        visited += 1
        if visited > MAX_YAML_NODES:
            raise ConfigError(
                f"{path}: the YAML expands to more than {MAX_YAML_NODES} nodes "
                "(nested aliases?); a cluster file is far smaller"
            )
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        raise ConfigError(
                            f"{path}:{key.start_mark.line + 1}: duplicate key {key.value!r} "
                            f"(first at line {seen[key.value]}); each key may appear once"
                        )
                    seen[key.value] = key.start_mark.line + 1
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


class _LineFinder:
    """Maps a field location such as ('workers', 1, 'rank') to its line in the file."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root

    def line(self, loc: Sequence[str | int], *, key: bool = False) -> int:
        node = self.root
        line = 1 if node is None else node.start_mark.line + 1
        for part in loc:
            child = self._child(node, part)
            if child is None:
                break
            key_node, value_node = child
            node = value_node
            line = (key_node if key else value_node).start_mark.line + 1
        return line

    @staticmethod
    def _child(node: yaml.Node | None, part: str | int) -> tuple[yaml.Node, yaml.Node] | None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                    return key_node, value_node
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            return node.value[part], node.value[part]
        return None


def _expand_env(path: Path, lines: _LineFinder, value: Any, loc: tuple[str | int, ...]) -> Any:
    """Expand ${VAR} in every string; an unset variable is an error naming the field."""
    if isinstance(value, dict):
        return {k: _expand_env(path, lines, v, (*loc, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(path, lines, v, (*loc, i)) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ and name in _PROCESS_VARIABLES:
                # Shells set these, but cron, CI and `sudo -i` may not: the process knows them.
                return _PROCESS_VARIABLES[name]()
            if name not in os.environ:
                raise ConfigError(
                    f"{path}:{lines.line(loc)}: {_dotted(loc)}: environment variable {name} "
                    "is not set; set it or write the value itself"
                )
            return os.environ[name]

        return ENV_REFERENCE.sub(substitute, value)
    return value


_PROCESS_VARIABLES = {
    "USER": lambda: _current_user(),
    "LOGNAME": lambda: _current_user(),
    "HOME": lambda: str(Path.home()),
}


def _dotted(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def _format_validation_error(path: Path, lines: _LineFinder, exc: ValidationError) -> str:
    errors = exc.errors()
    # An unknown key is often a misspelt required one: name it first, it explains the rest.
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(p for p in error["loc"] if not isinstance(p, str) or not p.startswith("function-"))
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = f"; expected one of: {', '.join(allowed)}" if allowed else ""
        return f"{path}:{lines.line(loc, key=True)}: {_dotted(loc)}: unknown key{hint}"
    if kind == "missing":
        return f"{path}:{lines.line(loc[:-1], key=True)}: {_dotted(loc)}: required but missing"
    message = error["msg"].removeprefix("Value error, ")
    if kind != "value_error" and "input" in error and not isinstance(error["input"], dict | list):
        message = f"{message} (got {error['input']!r})"
    return f"{path}:{lines.line(loc)}: {_dotted(loc)}: {message}"


def _allowed_keys(loc: Sequence[str | int]) -> list[str]:
    """The keys the schema accepts at a location, for the 'unknown key' hint."""
    model: Any = ClusterConfig
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if info is None:
            return []
        annotation = info.annotation
        args = getattr(annotation, "__args__", ())
        model = next((a for a in (annotation, *args) if isinstance(a, type)), None)
        if model is list and args:
            model = args[0]
        if model is None or not hasattr(model, "model_fields"):
            return []
    return list(model.model_fields) if hasattr(model, "model_fields") else []


def _semantic_problems(config: ClusterConfig) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Cross-field rules: unique names, addresses and ranks; ranks 0..N-1 with the master at 0."""
    master = config.cluster.master
    master_name = master.name or master.hostname
    names = {master_name: ("cluster", "master")}
    addresses = {(master.ip, master.port): master_name}
    ranks = {0: master_name}
    for index, worker in enumerate(config.workers):
        loc: tuple[str | int, ...] = ("workers", index)
        if worker.name in names:
            yield (
                (*loc, "name"),
                f"{worker.name!r} is already used by another node; names must be unique",
            )
        names[worker.name] = loc
        address = (worker.ip, worker.ssh_port)
        if address in addresses:
            yield (
                (*loc, "ip"),
                (
                    f"{worker.ip}:{worker.ssh_port} is already used by {addresses[address]}; "
                    "each node needs its own address"
                ),
            )
        addresses[address] = worker.name
        if worker.rank in ranks:
            owner = ranks[worker.rank]
            reason = "is the master's rank" if worker.rank == 0 else f"is already used by {owner}"
            yield (*loc, "rank"), f"{worker.rank} {reason}; ranks must be unique"
        ranks[worker.rank] = worker.name
    expected = set(range(len(config.workers) + 1))
    if set(ranks) != expected:
        top = len(config.workers)
        for index, worker in enumerate(config.workers):
            if worker.rank not in expected:
                yield (
                    ("workers", index, "rank"),
                    (
                        f"{worker.rank} is out of range; with {top} workers, ranks are 1..{top} "
                        "(the master is 0)"
                    ),
                )
    for index, worker in enumerate(config.workers):
        for key, value in worker.paths.model_dump(exclude_none=True).items():
            if not PurePosixPath(_expand_home(value, "/home")).is_absolute():
                yield (
                    ("workers", index, "paths", key),
                    (f"{value!r} must be absolute or start with ~/ (the worker's home)"),
                )
    ports = {config.cluster.communication.master_port}
    if master.connection == "ssh" and master.port in ports:
        yield (
            ("cluster", "communication", "master_port"),
            (f"{master.port} is the master's SSH port; the rendezvous needs a port of its own"),
        )


# --- Resolution ---------------------------------------------------------------------------------


def resolve(config: ClusterConfig, *, source: Path | None, base_dir: Path) -> Cluster:
    """Fill in every default: node paths, interpreters and ugro's own directories."""
    paths = _resolve_paths(config.paths, source=source, base_dir=base_dir)
    master = config.cluster.master
    master_home = _local_path(master.paths.home, base_dir) or str(Path.home())
    master_project = _local_path(master.paths.project, base_dir) or str(paths.project_root)
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
            scripts=_local_path(master.paths.scripts, base_dir),
            python=master.python,
            nproc=master.nproc_per_node,
            hardware=master.hardware,
        )
    ]
    for worker in sorted(config.workers, key=lambda w: w.rank):
        home = _remote_path(worker.paths.home, f"/home/{worker.user}", f"/home/{worker.user}")
        project = _remote_path(worker.paths.project, home, f"{home}/projects/UGRO")
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
                scripts=_remote_path(worker.paths.scripts, home, None),
                python=worker.python,
                nproc=worker.nproc_per_node,
                hardware=worker.hardware,
            )
        )
    return Cluster(
        name=config.cluster.name,
        source=source,
        config=config,
        nodes=tuple(nodes),
        paths=paths,
        ssh_identity_file=_local_path(config.ssh.identity_file, base_dir),
        ssh_known_hosts=_local_path(config.ssh.known_hosts, base_dir),
        env_source=_local_path(
            config.environment.requirements
            if config.environment.manager == "venv"
            else config.environment.pixi_manifest_dir,
            base_dir,
        ),
    )


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
    **fields: Any,
) -> Node:
    return Node(
        home=home,
        project_path=project,
        scripts_path=scripts or f"{project}/scripts",
        python=_node_python(config.environment, project, python, home, connection),
        nproc_per_node=nproc,
        hardware=hardware.model_dump(exclude_none=True),
        connection=connection,
        **fields,
    )


def _node_python(
    env: EnvironmentSection, project: str, override: str | None, home: str, connection: str
) -> str:
    if override:
        return _expand_home(override, home)
    if env.manager == "pixi":
        return f"{project}/.pixi/envs/{env.conda_env}/bin/python"
    if env.manager == "venv":
        venv = _expand_home(env.path or ".venv", home)
        if not venv.startswith("/"):
            venv = f"{project}/{venv}"
        return f"{venv}/bin/python"
    if env.python:
        return _expand_home(env.python, home)
    # `system` without an interpreter: on the master, the one running ugro (and Ansible, which
    # shares its environment); elsewhere, the distribution's.
    return sys.executable if connection == "local" else "/usr/bin/python3"


def _expand_home(value: str, home: str) -> str:
    if value == "~" or value.startswith("~/"):
        return home + value[1:]
    return value


def _remote_path(value: str | None, home: str, default: str | None) -> str:
    """A path on another machine: `~` is that machine's home, and it must end up absolute."""
    if value is None:
        return default  # type: ignore[return-value]
    return _expand_home(value, home)


def _local_path(value: str | None, base_dir: Path) -> str | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    return str(path.resolve())


def _resolve_paths(section: PathsSection, *, source: Path | None, base_dir: Path) -> ClusterPaths:
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
    )
