"""The one place that calls ansible-runner.

Every playbook ugro runs goes through `run_playbook`: the derived inventory, an explicit
environment, `quiet=True`, and per-host outcomes read from events (never from Ansible's stdout).
Artifacts stay in the run's own directory under data/runs/, and a run that does not end as
`successful` becomes a RunError carrying status, rc and that directory when the caller asks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ugro import assets
from ugro.errors import RunError
from ugro.inventory import build_inventory
from ugro.resolved import ResolvedCluster

if TYPE_CHECKING:
    from ugro.config import Cluster

log = logging.getLogger(__name__)

EventCallback = Callable[[Mapping[str, Any]], None]


@dataclass
class HostOutcome:
    """What one host did in a run, assembled from runner_on_* events."""

    name: str
    ok: int = 0
    changed: int = 0
    failed: bool = False
    unreachable: bool = False
    message: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    # The registered results of tasks, by task name, for callers that read module output.
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class RunResult:
    playbook: str
    status: str
    rc: int
    run_dir: Path
    artifact_dir: Path | None
    hosts: dict[str, HostOutcome]

    @property
    def successful(self) -> bool:
        return self.status == "successful"

    @property
    def stdout_path(self) -> Path | None:
        return self.artifact_dir / "stdout" if self.artifact_dir else None

    def raise_for_status(self) -> RunResult:
        if self.successful:
            return self
        troubled = [h for h in self.hosts.values() if h.failed or h.unreachable]
        detail = "; ".join(
            f"{h.name}: {'unreachable' if h.unreachable else 'failed'}: {h.message or '?'}"
            for h in troubled
        )
        where = f" (log: {self.stdout_path})" if self.stdout_path else ""
        raise RunError(
            f"playbook {self.playbook} {self.status} (rc={self.rc})"
            + (f": {detail}" if detail else "")
            + where,
            status=self.status,
            rc=self.rc,
            artifact_dir=self.artifact_dir,
        )


class _EventCollector:
    """Folds the event stream into per-host outcomes, passing each event on to a display."""

    def __init__(self, on_event: EventCallback | None) -> None:
        self.hosts: dict[str, HostOutcome] = {}
        self.on_event = on_event

    def host(self, name: str) -> HostOutcome:
        return self.hosts.setdefault(name, HostOutcome(name))

    def __call__(self, event: Mapping[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        name = data.get("host")
        res = data.get("res") or {}
        if name and kind == "runner_on_ok":
            outcome = self.host(name)
            outcome.ok += 1
            outcome.changed += bool(res.get("changed"))
            outcome.facts.update(res.get("ansible_facts") or {})
            outcome.results[data.get("task", "")] = res
        elif name and kind == "runner_on_failed" and not data.get("ignore_errors"):
            outcome = self.host(name)
            outcome.failed = True
            outcome.message = _failure_message(res)
            # Ansible sets no facts from a failed task, but a module may report why it failed
            # in them (ugro_health_probe returns its whole report): keep them for the verdict.
            outcome.facts.update(res.get("ansible_facts") or {})
            outcome.results[data.get("task", "")] = res
        elif name and kind == "runner_on_unreachable":
            outcome = self.host(name)
            outcome.unreachable = True
            outcome.message = _unreachable_message(res)
        if self.on_event is not None:
            self.on_event(event)
        return True  # keep the event in the artifacts


def _failure_message(res: Mapping[str, Any]) -> str:
    message = str(res.get("msg") or "").strip()
    stderr = str(res.get("stderr") or "").strip()
    if stderr and (not message or message.startswith("non-zero return code")):
        message = stderr.splitlines()[-1]
    return " ".join(message.split()) or "failed"


def _unreachable_message(res: Mapping[str, Any]) -> str:
    """SSH's last word ("connect to host ... Connection refused") without Ansible's preamble."""
    message = " ".join(str(res.get("msg") or "unreachable").split())
    _, found, ssh_said = message.rpartition("ssh: ")
    return ssh_said if found and ssh_said else message


# ansible-runner copies the whole process environment into each run's artifacts
# (artifacts/<id>/command), so secrets must not be in it while a run starts. A job that needs a
# token gets it as a file (see ugro.launch), never through the environment or a variable.
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|CREDENTIAL", re.I)


@contextlib.contextmanager
def _without_secrets() -> Iterator[None]:
    hidden = {k: os.environ.pop(k) for k in list(os.environ) if _SECRET_NAME.search(k)}
    try:
        yield
    finally:
        os.environ.update(hidden)


def ansible_environment(cluster: Cluster | ResolvedCluster) -> dict[str, str]:
    """What every run gets: ugro's own config, roles and plugins, wherever ugro is installed."""
    project = assets.project_dir()
    bin_dir = str(Path(sys.executable).parent)
    env = {
        "ANSIBLE_CONFIG": str(project / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(project / "roles"),
        "ANSIBLE_INVENTORY_PLUGINS": str(assets.INVENTORY_PLUGINS),
        "ANSIBLE_FILTER_PLUGINS": str(assets.FILTER_PLUGINS),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        # ansible-runner finds ansible-playbook on PATH: make it the one beside this interpreter.
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
    }
    if cluster.source is not None:
        env["UGRO_CONFIG"] = str(cluster.source)
    return env


def runner_arguments(
    cluster: Cluster | ResolvedCluster,
    playbook: str,
    *,
    run_dir: Path,
    extravars: Mapping[str, Any] | None = None,
    limit: list[str] | None = None,
    check: bool = False,
    tags: list[str] | None = None,
    timeout: int | None = None,
) -> dict[str, Any]:
    """The keyword arguments for ansible_runner.run, built in one place (and unit-tested)."""
    path = assets.playbook_path(playbook)
    cmdline = ["--check"] if check else []
    arguments: dict[str, Any] = {
        "private_data_dir": str(run_dir),
        "project_dir": str(assets.project_dir()),
        "playbook": str(path),
        "inventory": (
            cluster.inventory()
            if isinstance(cluster, ResolvedCluster)
            else build_inventory(cluster)
        ),
        "envvars": ansible_environment(cluster),
        "extravars": dict(extravars or {}),
        "quiet": True,
        # Nothing that ansible-runner would write to env/ (envvars, extravars) may hold a secret.
        "suppress_env_files": True,
        "rotate_artifacts": 1,
    }
    if cmdline:
        arguments["cmdline"] = " ".join(cmdline)
    if limit:
        arguments["limit"] = ",".join(limit)
    if tags:
        arguments["tags"] = ",".join(tags)
    if timeout:
        arguments["timeout"] = timeout
    return arguments


def new_run_dir(
    cluster: Cluster | ResolvedCluster, playbook: str, parent: Path | None = None
) -> Path:
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    name = f"{stamp}_{Path(playbook).stem}_{secrets.token_hex(3)}"
    run_dir = (parent or cluster.paths.runs) / name
    run_dir.mkdir(parents=True, exist_ok=False)
    return run_dir


def run_playbook(
    cluster: Cluster | ResolvedCluster,
    playbook: str,
    *,
    extravars: Mapping[str, Any] | None = None,
    limit: list[str] | None = None,
    check: bool = False,
    tags: list[str] | None = None,
    timeout: int | None = None,
    run_dir: Path | None = None,
    on_event: EventCallback | None = None,
) -> RunResult:
    """Run a playbook against the cluster and return what each host did."""
    import ansible_runner  # deferred: importing Ansible costs a second and most commands skip it

    run_dir = run_dir or new_run_dir(cluster, playbook)
    arguments = runner_arguments(
        cluster,
        playbook,
        run_dir=run_dir,
        extravars=extravars,
        limit=limit,
        check=check,
        tags=tags,
        timeout=timeout,
    )
    collector = _EventCollector(on_event)
    log.debug("ansible-runner %s in %s (limit=%s, check=%s)", playbook, run_dir, limit, check)
    with _without_secrets():
        runner = ansible_runner.run(event_handler=collector, **arguments)
    artifact_dir = Path(runner.config.artifact_dir) if runner.config.artifact_dir else None
    result = RunResult(
        playbook=Path(arguments["playbook"]).stem,
        status=runner.status,
        rc=runner.rc if runner.rc is not None else -1,
        run_dir=run_dir,
        artifact_dir=artifact_dir,
        hosts=collector.hosts,
    )
    log.info(
        "playbook %s %s rc=%s artifacts=%s", result.playbook, result.status, result.rc, artifact_dir
    )
    return result
