"""The cluster.yaml schema: the seed's keys (cluster/master/communication, workers, paths,
training, environment, logging) plus what real use needs (`ssh`, per-node `accelerator` and
`python`, `environment.manager`). Every key either does what it says or is refused: unknown
keys are errors, and the cross-field rules live in `semantic_problems`.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

Location = tuple[str | int, ...]

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


def _module_name(value: str) -> str:
    # Joined with commas into one --target-modules option: a name is an identifier path.
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]{0,127}", value):
        raise ValueError(f"{value!r} is not a module name; expected an identifier like q_proj")
    return value


def _log_format(value: str) -> str:
    """A %-style record format that formats a real record (unknown fields are refused)."""
    record = logging.LogRecord("ugro", logging.INFO, __file__, 1, "message", None, None)
    try:
        logging.Formatter(value, validate=True).format(record)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{value!r} is not a logging format ({exc})") from None
    return value


def _path(value: str) -> str:
    if not value or any(c in value for c in "\0\n\r"):
        raise ValueError(f"{value!r} is not a usable path")
    return value


def _ssh_path(value: str) -> str:
    # ssh takes it in an option value, double-quoted so that a space stays in the path.
    if '"' in value:
        raise ValueError(f"{value!r}: a path for ssh may not contain '\"'")
    return value


NodeName = Annotated[str, AfterValidator(_node_name)]
HostName = Annotated[str, AfterValidator(_hostname)]
Address = Annotated[str, AfterValidator(_address)]
UserName = Annotated[str, AfterValidator(_user_name)]
EnvName = Annotated[str, AfterValidator(_env_name)]
PathStr = Annotated[str, AfterValidator(_path)]
SshPathStr = Annotated[str, AfterValidator(_path), AfterValidator(_ssh_path)]
Port = Annotated[int, Field(ge=1, le=65535)]
Accelerator = Literal["cuda", "cpu", "auto"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- The schema ---------------------------------------------------------------------------------


class Hardware(_Model):
    """What the node has, as the user describes it (shown by `ugro inventory`)."""

    gpu_model: str | None = None
    gpu_count: Annotated[int, Field(ge=0, le=64)] | None = None
    # Each GPU's memory. `--balance auto` holds a rank's micro-batch to it (below the card's own
    # where the two differ); on a CPU node it is the memory budget the probe honours instead.
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
    # Each of this node's ranks' samples per micro-step under `ugro launch --balance manual`.
    micro_batch_size: Annotated[int, Field(ge=1, le=4096)] | None = None
    hardware: Hardware = Hardware()
    paths: NodePaths = NodePaths()


class CommunicationSection(_Model):
    # torchrun's rendezvous: c10d (the master's agent hosts the store) or static (fixed node
    # ranks, the master is node 0).
    backend: Literal["c10d", "static"] = "c10d"
    master_port: Port = 29500
    # How long a rank waits for its peers (the process-group timeout) before failing.
    timeout_seconds: Annotated[int, Field(ge=1, le=86400)] = 300
    # torchrun --max-restarts: how often a failed worker group is restarted before giving up.
    max_restarts: Annotated[int, Field(ge=0, le=100)] = 0
    # How often UGRO's controller starts a failed or lost job again from its last complete
    # checkpoint (`ugro launch --retries` overrides).
    retries: Annotated[int, Field(ge=0, le=100)] = 0
    # Seconds before the first retry; each later one waits twice as long as the one before,
    # a minute at most.
    retry_backoff_seconds: Annotated[float, Field(ge=0, le=3600)] = 5
    # A launch on several nodes runs `ugro netcheck` first when its last result for those nodes
    # is older than this (its interfaces name GLOO/NCCL_SOCKET_IFNAME); 0: at every launch.
    netcheck_max_age_hours: Annotated[float, Field(ge=0, le=8760)] = 24


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
    # Each of this node's ranks' samples per micro-step under `ugro launch --balance manual`.
    micro_batch_size: Annotated[int, Field(ge=1, le=4096)] | None = None
    hardware: Hardware = Hardware()
    paths: NodePaths = NodePaths()


class PathsSection(_Model):
    """The master's layout. `scripts` is where the master keeps ugro's scripts (what `ugro sync`
    writes there, and its ranks run); `config` holds the training_defaults.yaml jobs use."""

    project_root: PathStr | None = None
    scripts: PathStr | None = None
    config: PathStr | None = None
    data: PathStr | None = None
    logs: PathStr | None = None
    experiments: PathStr | None = None


# Every training key is optional: what cluster.yaml sets is passed to train_production.py; what
# it leaves out comes from the nodes' training_defaults.yaml, so a job's config.json never
# claims a value that was not used.
class LoraSection(_Model):
    rank: Annotated[int, Field(ge=1)] | None = None
    alpha: Annotated[float, Field(gt=0)] | None = None
    dropout: Annotated[float, Field(ge=0, lt=1)] | None = None
    target_modules: list[Annotated[str, AfterValidator(_module_name)]] | None = None


class TrainingSection(_Model):
    default_model: str | None = None
    default_dataset: str | None = None
    default_epochs: Annotated[float, Field(gt=0)] | None = None
    default_learning_rate: Annotated[float, Field(gt=0)] | None = None
    batch_size_per_gpu: Annotated[int, Field(ge=1)] | None = None
    gradient_accumulation_steps: Annotated[int, Field(ge=1)] | None = None
    max_seq_length: Annotated[int, Field(ge=8)] | None = None
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
    """ugro's own log (the seed's logs/agent.log): its level, record format, file and age."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "DEBUG"
    format: Annotated[str, AfterValidator(_log_format)] = (
        "[%(asctime)s] %(name)s - %(levelname)s - %(message)s"
    )
    file: PathStr | None = None
    # Log files roll over at midnight; this many days of them are kept.
    keep_days: Annotated[int, Field(ge=0, le=3650)] = 7
    # How many Ansible runs (data/runs/<run>/) are kept; the oldest go first.
    keep_runs: Annotated[int, Field(ge=1, le=100_000)] = 100


class SshSection(_Model):
    identity_file: SshPathStr | None = None
    known_hosts: SshPathStr | None = None
    connect_timeout: Annotated[int, Field(ge=1, le=300)] = 5
    # The interpreter Ansible's modules run under on SSH nodes (not the training environment).
    python_interpreter: PathStr = "/usr/bin/python3"


class DaemonSection(_Model):
    """The daemon's health monitoring (`ugro daemon`)."""

    probe_interval_seconds: Annotated[float, Field(ge=1, le=86400)] = 60
    deep_probe_interval_seconds: Annotated[float, Field(ge=10, le=604800)] = 3600
    # Below this much free disk (GB) where jobs write, a node is unhealthy ("disk filling").
    disk_min_free_gb: Annotated[float, Field(ge=0)] = 5


class TelemetrySection(_Model):
    """Each node's telemetry while a job runs (logs/<node>.telemetry.jsonl): CPU, memory, disk,
    network, and its GPUs through NVML."""

    # Seconds between samples; 0 turns it off.
    interval_seconds: Annotated[float, Field(ge=0, le=3600)] = 1.0

    @field_validator("interval_seconds")
    @classmethod
    def _not_too_fast(cls, value: float) -> float:
        if 0 < value < 0.1:
            raise ValueError("must be 0 (off) or at least 0.1 seconds")
        return value


def _listen_address(value: str) -> str:
    if value != "localhost":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address (or localhost)") from None
    return value


class DashboardSection(_Model):
    """The web dashboard, as `ugro dashboard` and the daemon serve it."""

    # Loopback by default; any other address needs a token (UGRO_DASHBOARD_TOKEN, or one
    # made when it starts).
    host: Annotated[str, AfterValidator(_listen_address)] = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8265
    # The daemon serves it while it runs.
    with_daemon: bool = True


class NotifySection(_Model):
    # An argv, never a shell string: run on a job's end and on a node going down, with the
    # event in UGRO_EVENT, UGRO_JOB_ID, UGRO_JOB_STATE, UGRO_NODE and UGRO_REASON.
    command: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] | None = None
    timeout_seconds: Annotated[int, Field(ge=1, le=3600)] = 30


_SLURM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,39}")


def _slurm_name(value: str) -> str:
    if not _SLURM_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r}: expected a letter, then letters, digits, '_' or '-' (40 at most)"
        )
    return value


class SlurmSection(_Model):
    """Slurm as `ugro slurm up` deploys it (roles/ugro_slurm)."""

    cluster_name: Annotated[str, AfterValidator(_slurm_name)] = "ugro"
    partition: Annotated[str, AfterValidator(_slurm_name)] = "ugro"
    # Whom Slurm runs jobs as: one account with one UID on every node (the master's user
    # unless set). `ugro slurm up` refuses nodes where it is missing or its UID differs.
    job_user: UserName | None = None
    # How the daemons are started: systemd units (Debian's), or directly where PID 1 is not
    # systemd (containers, WSL, the sandbox).
    services: Literal["systemd", "direct"] = "systemd"
    # Install munge and Slurm with the node's package manager (apt); off where they are already.
    install: bool = True
    # RealMemory this far below slurmd's figure: a node never turns invalid after a reboot.
    memory_margin_mb: Annotated[int, Field(ge=0, le=1_048_576)] = 1024
    controller_port: Port = 6817
    node_port: Port = 6818


class ClusterConfig(_Model):
    cluster: ClusterSection
    workers: list[WorkerSection] = []
    paths: PathsSection = PathsSection()
    training: TrainingSection = TrainingSection()
    environment: EnvironmentSection = EnvironmentSection()
    logging: LoggingSection = LoggingSection()
    ssh: SshSection = SshSection()
    daemon: DaemonSection = DaemonSection()
    notify: NotifySection = NotifySection()
    telemetry: TelemetrySection = TelemetrySection()
    dashboard: DashboardSection = DashboardSection()
    # Who starts jobs on the nodes: UGRO itself, or Slurm (deployed by `ugro slurm up`):
    # `ugro launch --scheduler` chooses per job.
    scheduler: Literal["ugro", "slurm"] = "ugro"
    slurm: SlurmSection = SlurmSection()


# --- Cross-field rules --------------------------------------------------------------------------


def semantic_problems(config: ClusterConfig) -> Iterator[tuple[Location, str]]:
    """Unique names, addresses and ranks (0..N-1, the master at 0); paths that say one thing."""
    master = config.cluster.master
    master_name = master.name or master.hostname
    names: dict[str, Location] = {master_name: ("cluster", "master")}
    addresses = {(master.ip, master.port): master_name}
    ranks = {0: master_name}
    for index, worker in enumerate(config.workers):
        loc: Location = ("workers", index)
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
            if not PurePosixPath(expand_home(value, "/home")).is_absolute():
                yield (
                    ("workers", index, "paths", key),
                    (f"{value!r} must be absolute or start with ~/ (the worker's home)"),
                )
    if master.connection == "ssh" and master.port == config.cluster.communication.master_port:
        yield (
            ("cluster", "communication", "master_port"),
            (f"{master.port} is the master's SSH port; the rendezvous needs a port of its own"),
        )
    # Two keys name the master's scripts directory; they must agree (compared as written,
    # after ~ expansion: they resolve against the same directory).
    scripts, master_scripts = config.paths.scripts, master.paths.scripts
    if scripts and master_scripts and expand_home(scripts, "~") != expand_home(master_scripts, "~"):
        yield (
            ("paths", "scripts"),
            (
                f"{scripts!r} differs from cluster.master.paths.scripts ({master_scripts!r}); "
                "both name the master's scripts directory: set one"
            ),
        )


def expand_home(value: str, home: str) -> str:
    """`~` or `~/x` against a given home (a node's, not the master's)."""
    if value == "~" or value.startswith("~/"):
        return home + value[1:]
    return value
