"""What a job is: the launch request, the script and the code it carries, its config.json.

A job carries its code (ugro's scripts, the training defaults, the node-side job control and the
job's own script), so a node needs only its environment, not an earlier `ugro sync`, and the job
directory records what ran. The request is kept by the job's controller (options.json) to start
later attempts as the first one was started.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ugro.core.cluster import Cluster
from ugro.core.errors import UsageError
from ugro.core.layout import CODE_DIR, JOBCTL_FILE, new_job_id
from ugro.nodes import assets
from ugro.nodes.scripts import JOBCTL
from ugro.records.history import Jobs, now_iso
from ugro.records.job_config import JobConfig

DEFAULT_SCRIPT = "train_production.py"
_CODE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]*")
_SCRIPT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.py")
_MAX_SCRIPT_BYTES = 4 << 20
# Where a job's data files land in its directory on every node, and which files travel.
DATA_DIR = "data"
DATA_SUFFIXES = (".jsonl", ".json", ".txt")
_DATA_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

# cluster.yaml's training keys (as ugro.config.resolution.training_settings names them) and the
# train_production.py options they become.
TRAINING_FLAGS = {
    "default_model": "--model",
    "default_dataset": "--dataset",
    "default_epochs": "--epochs",
    "default_learning_rate": "--lr",
    "batch_size_per_gpu": "--batch-size",
    "gradient_accumulation_steps": "--grad-accum",
    "max_seq_length": "--max-seq-length",
    "lora.rank": "--lora-rank",
    "lora.alpha": "--lora-alpha",
    "lora.dropout": "--lora-dropout",
    "lora.target_modules": "--target-modules",
}


@dataclass(frozen=True)
class LaunchRequest:
    name: str
    script: str = DEFAULT_SCRIPT
    args: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    allow_drift: bool = False
    # Launch beside another UGRO job's processes (refused by default, naming the job).
    force: bool = False
    # Extra variables for the launch playbook (`ugro run launch JOB -e k=v`).
    extravars: Mapping[str, Any] = field(default_factory=dict)
    # How the ranks split each micro-step's samples: equal, auto or manual (ugro.launch.balance).
    balance: str = "equal"
    # The Hugging Face token's value: it only ever becomes a 0600 file (ugro.launch.attempt).
    hf_token: str | None = field(default=None, repr=False)
    # Data files on the master that travel with the job to <job dir>/data/ on every node.
    data_files: tuple[str, ...] = ()
    # Who starts it: "ugro", "slurm", or "" for cluster.yaml's `scheduler`.
    scheduler: str = ""

    def to_json(self) -> dict[str, Any]:
        """The request as the controller keeps it for later attempts (the token stays out: the
        controller has it in its environment, never in a file)."""
        return {
            "name": self.name,
            "script": self.script,
            "args": list(self.args),
            "nodes": list(self.nodes),
            "allow_drift": self.allow_drift,
            "force": self.force,
            "extravars": dict(self.extravars),
            "balance": self.balance,
            "data_files": list(self.data_files),
            "scheduler": self.scheduler,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LaunchRequest:
        return cls(
            name=str(data["name"]),
            script=str(data.get("script") or DEFAULT_SCRIPT),
            args=tuple(str(a) for a in data.get("args") or ()),
            nodes=tuple(str(n) for n in data.get("nodes") or ()),
            allow_drift=bool(data.get("allow_drift")),
            force=bool(data.get("force")),
            extravars=dict(data.get("extravars") or {}),
            balance=str(data.get("balance") or "equal"),
            hf_token=os.environ.get("HF_TOKEN") or None,
            data_files=tuple(str(f) for f in data.get("data_files") or ()),
            scheduler=str(data.get("scheduler") or ""),
        )

    def scheduler_on(self, cluster: Cluster) -> str:
        return self.scheduler or cluster.scheduler

    def resume_args(self) -> tuple[str, ...]:
        """The script's arguments for a later attempt: train_production.py resumes from the
        newest checkpoint complete on every rank; another script sees UGRO_ATTEMPT above 1."""
        if self.script == DEFAULT_SCRIPT:
            return (*self.args, "--resume", "auto")
        return self.args


def training_args(
    cluster: Cluster,
    *,
    overrides: Mapping[str, Any] | None = None,
    extra: tuple[str, ...] = (),
) -> tuple[str, ...]:
    """Options for train_production.py: cluster.yaml's training section, then the command line's
    (`overrides`, keyed by option), then anything after `--`."""
    values: dict[str, Any] = {TRAINING_FLAGS[key]: value for key, value in cluster.launch.training}
    values["--ddp-timeout"] = cluster.launch.timeout_seconds
    values.update({flag: value for flag, value in (overrides or {}).items() if value is not None})
    args: list[str] = []
    for flag, value in values.items():
        args += [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return (*args, *extra)


def shipped_dataset(dataset: str | None) -> tuple[str | None, tuple[str, ...]]:
    """`--dataset` as the ranks see it, and the file the job carries for it: a data file that
    exists on the master as typed travels with the job to <job dir>/data/ on every node (the
    ranks' working directory, so `data/NAME` finds it on each). Anything else is passed on as
    it is: a hub name, or a path each node holds (a quoted '~/...' is each node's own home)."""
    if not dataset:
        return dataset, ()
    path = Path(dataset)
    if path.suffix.lower() not in DATA_SUFFIXES or not path.is_file():
        return dataset, ()
    # Ansible would template a path holding braces: refused rather than interpreted.
    if "{" in dataset or not _DATA_NAME.fullmatch(path.name):
        raise UsageError(
            f"--dataset {dataset}: a file the job carries needs a name of letters, digits, "
            "'_', '.', '-' and a path without braces"
        )
    return f"{DATA_DIR}/{path.name}", (str(path.resolve()),)


def job_nodes(cluster: Cluster, nodes: tuple[str, ...]) -> list[str]:
    """The job's nodes in rank order: the first is the job's lead node (see lead_of)."""
    if not nodes:
        return cluster.node_names
    chosen = [cluster.node(name).name for name in nodes]
    return [name for name in cluster.node_names if name in chosen]


def lead_of(nodes: list[str]) -> str:
    """The node that hosts a job's rendezvous and whose first rank writes its metrics and
    artifacts: the job's first node in rank order (the master whenever it takes part, so
    the results land in its experiment directory as they are written)."""
    return nodes[0]


def training_defaults_file(cluster: Cluster) -> Path:
    """paths.config's training_defaults.yaml when cluster.yaml sets paths.config, else ugro's."""
    if cluster.paths.config is not None:
        path = cluster.paths.config / "training_defaults.yaml"
        if not path.is_file():
            raise UsageError(
                f"{cluster.describe()}: paths.config is {cluster.paths.config}, which holds no "
                "training_defaults.yaml; add one (config/training_defaults.yaml is ugro's) or "
                "remove paths.config"
            )
        return path
    return assets.project_dir() / "config" / "training_defaults.yaml"


@dataclass(frozen=True)
class JobScript:
    """The script a job runs: its path in the job's code directory, and where it comes from."""

    code_name: str
    source: Path

    @classmethod
    def choose(cls, script: str) -> JobScript:
        """A script of ugro's scripts/ (by its name there, or by a path into it), or any .py
        file on the master, shipped with the job."""
        scripts = (assets.project_dir() / "scripts").resolve()
        given = Path(script).expanduser()
        for candidate in ((scripts / script).resolve(), given.resolve()):
            if candidate.is_file() and candidate.is_relative_to(scripts):
                relative = str(candidate.relative_to(scripts))
                if not _CODE_NAME.fullmatch(relative):
                    raise UsageError(
                        f"--script {script}: use letters, digits, '_', '.', '-' in its name"
                    )
                return cls(f"scripts/{relative}", candidate)
        if not given.is_file():
            raise UsageError(f"--script {script}: no such file (on the master, or under {scripts})")
        if not _SCRIPT_NAME.fullmatch(given.name):
            raise UsageError(
                f"--script {script}: expected a .py file named with letters, digits, '_.-'"
            )
        return cls(given.name, given.resolve())


def code_files(cluster: Cluster, script: JobScript) -> list[dict[str, str]]:
    """What the job carries to every node's code/ directory: ugro's scripts (the rank wrapper,
    the training program), the training defaults, the node-side job control with the process
    reader it imports, and the job's own script."""
    scripts = assets.project_dir() / "scripts"
    sources = [
        (f"scripts/{path.relative_to(scripts)}", path)
        for path in sorted(scripts.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    ]
    sources.append(("config/training_defaults.yaml", training_defaults_file(cluster)))
    # The node-side job control, for the job's controller on the master to run over SSH, and
    # the node's reader of a job's processes that it imports, beside it.
    sources.append((JOBCTL_FILE, JOBCTL.file))
    sources += [(helper.name, helper) for helper in JOBCTL.helper_files()]
    if not script.code_name.startswith("scripts/"):
        sources.append((script.code_name, script.source))
    return [
        {"name": f"{CODE_DIR}/{name}", "content": _text(path), "mode": "0640"}
        for name, path in sources
    ]


def _text(path: Path) -> str:
    try:
        if path.stat().st_size > _MAX_SCRIPT_BYTES:
            raise UsageError(f"{path}: larger than 4 MiB; a job's code travels with it")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text; a job's code must be text") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror})") from None


def ranks_per_node(commands: Mapping[str, list[str]]) -> dict[str, int]:
    """Each node's rank count, from the torchrun commands a launch recorded."""
    counts = {}
    for node, command in commands.items():
        if "--nproc-per-node" in command:
            counts[node] = int(command[command.index("--nproc-per-node") + 1])
    return counts


def default_grad_accum(job_dir: Path) -> int:
    """The gradient accumulation the job's training defaults give (code/config/...)."""
    try:
        data = yaml.safe_load(
            (job_dir / CODE_DIR / "config" / "training_defaults.yaml").read_text()
        )
        return int(data["training"]["gradient_accumulation_steps"])
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return 1


def job_config(
    cluster: Cluster, job_id: str, request: LaunchRequest, nodes: list[str]
) -> JobConfig:
    """A new job's config.json: what it is, where, and from which code and cluster."""
    return JobConfig(
        job_id=job_id,
        name=request.name,
        created_at=now_iso(),
        nodes=tuple(nodes),
        script=request.script,
        args=tuple(request.args),
        allow_drift=request.allow_drift,
        balance=request.balance,
        git_commit=git_commit(assets.project_dir()),
        cluster=cluster.document,
        cluster_file=str(cluster.source) if cluster.source else None,
    )


def create_job(jobs: Jobs, name: str) -> str:
    """A new job's id and directory. Ids name the second a job was launched: a launch of the
    same name in the same second takes the next second's id, never the other's directory."""
    for _ in range(5):
        job_id = new_job_id(name)
        try:
            jobs.create(job_id)
            return job_id
        except UsageError:
            time.sleep(1.0 - time.time() % 1.0 + 0.01)
    raise UsageError(f"could not find a free id for job {name}; launch again")


def git_commit(directory: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
