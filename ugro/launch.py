"""Starting a job: its options, the code it carries, and the launch playbook.

A launch writes the job's experiment directory and config.json on the master, records
`launching`, and runs playbooks/launch.yml: a health preflight on every node, then the launch
role, which writes the job's code and start scripts into the job directory on each node and
starts its torchrun agent detached. The job carries its code (ugro's scripts, the training
defaults and the job's own script), so a node needs only its environment, not an earlier
`ugro sync`, and the job directory records what ran.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ugro import assets
from ugro.cluster import Cluster
from ugro.control import stop_quietly
from ugro.errors import RunError, UgroError, UsageError
from ugro.joblayout import CODE_DIR, new_job_id
from ugro.jobs import Jobs, git_commit, now_iso
from ugro.nodelink import JOBCTL
from ugro.runner import EventCallback, RunResult, run_playbook
from ugro.watcher import ControllerOptions, Watcher

log = logging.getLogger(__name__)

DEFAULT_SCRIPT = "train_production.py"
_CODE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]*")
_SCRIPT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.py")
_MAX_SCRIPT_BYTES = 4 << 20
_LAUNCH_LOCK_WAIT_S = 300.0
# In the environment of a launch's Ansible run: if the process that started it dies, the job's
# controller finds the run by it and ends it before cleaning up (ugro.controller).
LAUNCH_TAG = "UGRO_LAUNCH_OF"
JOBCTL_NAME = JOBCTL.removeprefix(f"{CODE_DIR}/")

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
# Extra variables a launch sets itself; `ugro run launch -e` may not override them.
_OWN_VARIABLES = frozenset(
    {
        "ugro_job_id",
        "ugro_launch_script",
        "ugro_launch_args",
        "ugro_launch_allow_drift",
        "ugro_launch_force",
        "ugro_launch_balance",
        "ugro_launch_interfaces",
        "ugro_launch_attempt",
        "ugro_launch_lead",
        "ugro_health_known_reports",
        "ugro_launch_code_file",
        "ugro_launch_secret_file",
    }
)


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
    # How the ranks split each micro-step's samples: equal, auto or manual (ugro/balance.py).
    balance: str = "equal"
    # The Hugging Face token's value: it only ever becomes a 0600 file (see _staged_files).
    hf_token: str | None = field(default=None, repr=False)


@dataclass
class LaunchResult:
    job_id: str
    nodes: list[str]
    commands: dict[str, list[str]]
    pids: dict[str, int]
    run: RunResult


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


def job_nodes(cluster: Cluster, nodes: tuple[str, ...]) -> list[str]:
    if not nodes:
        return cluster.node_names
    chosen = [cluster.node(name).name for name in nodes]
    # In rank order: the first is the job's lead node (see lead_of).
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
    the training program), the training defaults, and the job's own script."""
    scripts = assets.project_dir() / "scripts"
    sources = [
        (f"scripts/{path.relative_to(scripts)}", path)
        for path in sorted(scripts.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    ]
    sources.append(("config/training_defaults.yaml", training_defaults_file(cluster)))
    # The node-side job control, for the job's controller on the master to run over SSH.
    sources.append(
        (JOBCTL_NAME, assets.project_dir() / "roles" / "ugro_job" / "files" / "jobctl.py")
    )
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


@contextmanager
def _staged_files(code: list[dict[str, str]], token: str | None) -> Iterator[dict[str, str]]:
    """The job's code list and the token, each in a file only this user can read, for the
    launch role to read on the master; both removed as soon as the launch is done."""
    paths: list[str] = []

    def stage(prefix: str, text: str) -> str:
        fd, path = tempfile.mkstemp(prefix=prefix)
        paths.append(path)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        return path

    try:
        yield {
            "ugro_launch_code_file": stage("ugro-code-", json.dumps(code)),
            "ugro_launch_secret_file": stage("ugro-secret-", token) if token else "",
        }
    finally:
        for path in paths:
            Path(path).unlink(missing_ok=True)


def launch(
    cluster: Cluster,
    request: LaunchRequest,
    *,
    dry_run: bool = False,
    on_event: EventCallback | None = None,
    options: ControllerOptions | None = None,
) -> LaunchResult:
    """Start a job on its nodes, with its controller watching from the start (or, with
    dry_run, only show what each node would run)."""
    clashing = sorted(_OWN_VARIABLES & set(request.extravars))
    if clashing:
        raise UsageError(f"-e {clashing[0]}: set by the launch itself; use the launch's options")
    jobs = Jobs(cluster)
    nodes = job_nodes(cluster, request.nodes)
    script = JobScript.choose(request.script)
    if dry_run:
        job_id = new_job_id(request.name)
        code = code_files(cluster, script)
        with _staged_files(code, None) as staged:
            result = run_playbook(
                cluster,
                "launch",
                extravars={
                    **_attempt_vars(request, job_id, script, request.args, 1, nodes),
                    **staged,
                },
                limit=nodes,
                check=True,
                on_event=on_event,
            )
        result.raise_for_status()
        return LaunchResult(job_id, nodes, result.facts("ugro_launch_command"), {}, result)

    job_id = create_job(jobs, request.name)
    jobs.write_config(job_id, job_config(cluster, job_id, request, nodes))
    watcher = Watcher(jobs.experiment_dir(job_id))
    watcher.prepare(cluster, replace(options or ControllerOptions(), request=request_json(request)))
    jobs.record(job_id, "launching", attempt=1, nodes=nodes, launcher_pid=os.getpid())
    # The controller starts before the nodes do: if this process dies mid-launch, it notices
    # (the launcher is gone while the job is still `launching`) and cleans up.
    watcher.spawn()
    return start_attempt(
        cluster, job_id, request, attempt=1, nodes=nodes, args=request.args, on_event=on_event
    )


def resume(
    cluster: Cluster,
    job_ref: str,
    *,
    options: ControllerOptions | None = None,
    nodes: tuple[str, ...] = (),
    on_event: EventCallback | None = None,
) -> LaunchResult:
    """Continue an ended job (succeeded, failed, stopped or lost) from its newest complete
    checkpoint, as its next attempt, with a controller of its own again."""
    jobs = Jobs(cluster)
    record = jobs.find(job_ref)
    watcher = Watcher(jobs.experiment_dir(record.job_id))
    if record.queued:
        raise UsageError(f"{record.job_id} is queued, not ended; `ugro cancel {record.job_id}`")
    if record.active or watcher.alive():
        raise UsageError(
            f"{record.job_id} is {record.state} (attempt {record.attempt}) and has its "
            f"controller; `ugro stop {record.job_id}` ends it first"
        )
    config = jobs.config(record.job_id)
    stored = watcher.options().request if watcher.exists() else {}
    request = stored_request(
        stored
        or {
            "name": record.name,
            "script": config.get("script"),
            "args": config.get("args"),
            "nodes": config.get("nodes"),
            "allow_drift": config.get("allow_drift"),
        }
    )
    if nodes:
        request = replace(request, nodes=nodes)
    chosen = job_nodes(cluster, request.nodes)
    watcher.prepare(cluster, replace(options or ControllerOptions(), request=request_json(request)))
    attempt = record.attempt + 1
    written = jobs.record(
        record.job_id,
        "launching",
        attempt=attempt,
        nodes=chosen,
        launcher_pid=os.getpid(),
        resumed_from=record.attempt,
    )
    if not written:
        raise UsageError(f"{record.job_id} changed while resuming it; look at `ugro status`")
    watcher.spawn()
    return start_attempt(
        cluster,
        record.job_id,
        request,
        attempt=attempt,
        nodes=chosen,
        args=resume_args(request),
        on_event=on_event,
    )


def resume_args(request: LaunchRequest) -> tuple[str, ...]:
    """The script's arguments for a later attempt: train_production.py resumes from the
    newest checkpoint complete on every rank; another script sees UGRO_ATTEMPT above 1."""
    if request.script == DEFAULT_SCRIPT:
        return (*request.args, "--resume", "auto")
    return request.args


def ranks_per_node(commands: Mapping[str, list[str]]) -> dict[str, int]:
    """Each node's rank count, from the torchrun commands a launch recorded."""
    counts = {}
    for node, command in commands.items():
        if "--nproc-per-node" in command:
            counts[node] = int(command[command.index("--nproc-per-node") + 1])
    return counts


def keep_global_batch(
    args: tuple[str, ...], default_accum: int, world_before: int, world_after: int
) -> tuple[str, ...] | None:
    """train_production.py's arguments on fewer ranks with the same global batch: gradient
    accumulation grows by world_before / world_after. None when it cannot stay the same (the
    ratio is not a whole number)."""
    accum = default_accum
    for index, arg in enumerate(args[:-1]):
        if arg == "--grad-accum":
            accum = int(args[index + 1])
    if world_after <= 0 or (accum * world_before) % world_after:
        return None
    return (*args, "--grad-accum", str(accum * world_before // world_after))


def default_grad_accum(job_dir: Path) -> int:
    """The gradient accumulation a job's training defaults give (code/config/...)."""
    import yaml

    try:
        data = yaml.safe_load(
            (job_dir / CODE_DIR / "config" / "training_defaults.yaml").read_text()
        )
        return int(data["training"]["gradient_accumulation_steps"])
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return 1


def job_config(
    cluster: Cluster, job_id: str, request: LaunchRequest, nodes: list[str]
) -> dict[str, Any]:
    """A new job's config.json: what it is, where, and from which code and cluster."""
    return {
        "job_id": job_id,
        "name": request.name,
        "created_at": now_iso(),
        "nodes": nodes,
        "script": request.script,
        "args": list(request.args),
        "allow_drift": request.allow_drift,
        "balance": request.balance,
        "git_commit": git_commit(assets.project_dir()),
        "cluster": cluster.document,
        "cluster_file": str(cluster.source) if cluster.source else None,
    }


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


def request_json(request: LaunchRequest) -> dict[str, Any]:
    """The launch as the controller keeps it for later attempts (the token stays out: the
    controller has it in its environment, never in a file)."""
    return {
        "name": request.name,
        "script": request.script,
        "args": list(request.args),
        "nodes": list(request.nodes),
        "allow_drift": request.allow_drift,
        "force": request.force,
        "extravars": dict(request.extravars),
        "balance": request.balance,
    }


def stored_request(data: Mapping[str, Any]) -> LaunchRequest:
    return LaunchRequest(
        name=str(data["name"]),
        script=str(data.get("script") or DEFAULT_SCRIPT),
        args=tuple(str(a) for a in data.get("args") or ()),
        nodes=tuple(str(n) for n in data.get("nodes") or ()),
        allow_drift=bool(data.get("allow_drift")),
        force=bool(data.get("force")),
        extravars=dict(data.get("extravars") or {}),
        balance=str(data.get("balance") or "equal"),
        hf_token=os.environ.get("HF_TOKEN") or None,
    )


def _attempt_vars(
    request: LaunchRequest,
    job_id: str,
    script: JobScript,
    args: tuple[str, ...],
    attempt: int,
    nodes: list[str],
) -> dict[str, Any]:
    return {
        **request.extravars,
        "ugro_job_id": job_id,
        "ugro_launch_script": script.code_name,
        "ugro_launch_args": list(args),
        "ugro_launch_allow_drift": request.allow_drift,
        "ugro_launch_force": request.force,
        "ugro_launch_balance": request.balance,
        "ugro_launch_attempt": attempt,
        "ugro_launch_lead": lead_of(nodes),
    }


@contextmanager
def launch_lock(cluster: Cluster) -> Iterator[None]:
    """One launch at a time on this master, from the preflight to the started agents: a second
    launch then sees the first's processes (and port) instead of racing it for them."""
    from filelock import FileLock, Timeout

    path = cluster.paths.data / "launch.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(path), timeout=_LAUNCH_LOCK_WAIT_S):
            yield
    except Timeout:
        raise UsageError(
            f"another launch on {cluster.name} has held {path} for {_LAUNCH_LOCK_WAIT_S:.0f}s; "
            "try again when it is done"
        ) from None


def start_attempt(
    cluster: Cluster,
    job_id: str,
    request: LaunchRequest,
    *,
    attempt: int,
    nodes: list[str],
    args: tuple[str, ...],
    on_event: EventCallback | None = None,
) -> LaunchResult:
    """Run the launch playbook for one attempt of a job already recorded as `launching`;
    record `running`, or `failed` with the reason (stopping whatever did start)."""
    jobs = Jobs(cluster)
    script = JobScript.choose(request.script)
    code = code_files(cluster, script)
    extravars = _attempt_vars(request, job_id, script, args, attempt, nodes)
    log.info(
        "launching %s (attempt %d) on %s: %s %s",
        job_id,
        attempt,
        ", ".join(nodes),
        request.script,
        " ".join(args),
    )
    with launch_lock(cluster), _staged_files(code, request.hf_token) as staged:
        from ugro.freshhealth import known_reports
        from ugro.netcheck import preflight as network_preflight

        # Under the lock: a check beside another launch's would contend for its ports.
        extravars["ugro_launch_interfaces"], refusal = network_preflight(cluster, nodes)
        if refusal is not None:
            reason = f"the network: {refusal}"
            jobs.record(job_id, "failed", attempt=attempt, reason=reason, ended_at=now_iso())
            raise UgroError(f"launch of {job_id} refused: {reason}")

        # With the daemon running, nodes it saw healthy within two probe intervals need no
        # probe (under the lock: the lead's free port and the jobs on each node are read now).
        extravars["ugro_health_known_reports"] = known_reports(
            cluster, nodes, lead_of(nodes), job_id
        )
        result = run_playbook(
            cluster,
            "launch",
            extravars={**extravars, **staged},
            limit=nodes,
            on_event=on_event,
            tag={LAUNCH_TAG: job_id},
        )
    commands = result.facts("ugro_launch_command")
    pids = {k: int(v) for k, v in result.facts("ugro_launch_pid").items()}
    config = jobs.config(job_id)
    config.update(
        commands=commands,
        pids=pids,
        rendezvous_port=result.facts("ugro_launch_port").get(lead_of(nodes)),
        fingerprints={
            name: _fingerprint(report)
            for name, report in result.facts("ugro_health_report").items()
        },
        launch_run=str(result.run_dir),
    )
    # The job as it began: what a retry on fewer nodes keeps its global batch against.
    config.setdefault("ranks_per_node", ranks_per_node(commands))
    if attempt > 1:
        config.setdefault("attempts", {})[str(attempt)] = {"nodes": nodes, "args": list(args)}
    jobs.write_config(job_id, config)
    if not result.successful:
        # Whatever did start must not be left running; a node may have started before another
        # failed, without its pid being recorded, so every node is asked.
        stop_quietly(cluster, job_id, nodes)
        reason = _first_failure(result)
        jobs.record(job_id, "failed", attempt=attempt, reason=reason, ended_at=now_iso())
        log.info("launch of %s failed: %s", job_id, reason)
        raise RunError(
            f"launch of {job_id} failed: {reason} (log: {result.stdout_path})",
            status=result.status,
            rc=result.rc,
            artifact_dir=result.artifact_dir,
        )
    jobs.record(job_id, "running", attempt=attempt, pids=pids)
    for node, command in commands.items():
        log.info("%s on %s (pid %s): %s", job_id, node, pids.get(node), " ".join(command))
    log.info("launched %s (attempt %d) into %s", job_id, attempt, jobs.experiment_dir(job_id))
    return LaunchResult(job_id, nodes, commands, pids, result)


def _fingerprint(report: dict[str, Any]) -> dict[str, Any]:
    env = report.get("env") or {}
    return {
        "python": env.get("python_version"),
        "torch": env.get("torch_version"),
        "cuda": env.get("cuda_build"),
        "nccl": env.get("nccl_version"),
        "lock_hash": report.get("lock_hash"),
        "gpus": [g.get("name") for g in report.get("gpus") or []],
    }


def _first_failure(result: RunResult) -> str:
    for outcome in result.hosts.values():
        if outcome.failed or outcome.unreachable:
            kind = "unreachable" if outcome.unreachable else "failed"
            return f"{outcome.name} {kind}: {outcome.message}"
    return f"playbook {result.status} (rc={result.rc})"
