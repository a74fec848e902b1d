"""The one place that calls ansible-runner.

Every playbook ugro runs goes through `run_playbook`: the derived inventory, an explicit
environment, `quiet=True`, and per-host outcomes read from events (never from Ansible's stdout).
Artifacts stay in the run's own directory under data/runs/, and a run that does not end as
`successful` becomes a RunError carrying status, rc and that directory when the caller asks.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ugro.core.cluster import Cluster
from ugro.core.errors import RunError
from ugro.nodes import assets, hostkeys
from ugro.nodes.inventory import build_inventory

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

    def facts(self, name: str) -> dict[str, Any]:
        """One fact, by host, from the hosts that set it."""
        return {host: o.facts[name] for host, o in self.hosts.items() if name in o.facts}

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
        elif name and kind == "runner_on_failed" and not data.get("ignore_errors"):
            outcome = self.host(name)
            outcome.failed = True
            outcome.message = _failure_message(res)
            # Ansible sets no facts from a failed task, but a module may report why it failed
            # in them (ugro_health_probe returns its whole report): keep them for the verdict.
            outcome.facts.update(res.get("ansible_facts") or {})
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


def _explain_host_keys(cluster: Cluster, hosts: Mapping[str, HostOutcome]) -> None:
    """A node refused for its host key: ssh's banner of @ signs becomes one line with the known
    and the offered fingerprints and `ugro node rekey` as the way out."""
    for outcome in hosts.values():
        if outcome.unreachable and outcome.name in cluster.node_names:
            node = cluster.node(outcome.name)
            outcome.message = hostkeys.explain(cluster, node, outcome.message or "") or (
                outcome.message
            )


def _unreachable_message(res: Mapping[str, Any]) -> str:
    """SSH's last word ("connect to host ... Connection refused") without Ansible's preamble."""
    message = " ".join(str(res.get("msg") or "unreachable").split())
    _, found, ssh_said = message.rpartition("ssh: ")
    return ssh_said if found and ssh_said else message


# ansible-runner copies the whole process environment into each run's artifacts
# (artifacts/<id>/command), so no secret may reach the environment a run starts with. A job that
# needs a token gets it as a file (see ugro.launch), never through the environment or a variable.
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|CREDENTIAL", re.I)
# ...but a variable that names a file or directory holds a path, not the secret itself, and
# Ansible needs some of them (ANSIBLE_VAULT_PASSWORD_FILE, ANSIBLE_VAULT_IDENTITY_LIST).
_PATH_NAME = re.compile(r"(_FILES?|_PATH|_DIR|^ANSIBLE_VAULT_IDENTITY_LIST)$")


def secret_variables(environ: Mapping[str, str]) -> list[str]:
    """The names in `environ` whose values must not reach a run."""
    return sorted(k for k in environ if _SECRET_NAME.search(k) and not _PATH_NAME.search(k))


def ansible_environment(cluster: Cluster) -> dict[str, str]:
    """What every run gets: ugro's own config, roles and plugins, wherever ugro is installed.

    The run's environment is this process's, updated with these (ansible-runner's rule); the
    process's own `os.environ` is never changed.
    """
    project = assets.project_dir()
    bin_dir = str(Path(sys.executable).parent)
    env = {
        "ANSIBLE_CONFIG": str(project / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(project / "roles"),
        "ANSIBLE_INVENTORY_PLUGINS": str(assets.INVENTORY_PLUGINS),
        "ANSIBLE_FILTER_PLUGINS": str(assets.FILTER_PLUGINS),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        # ansible-runner sets ANSIBLE_HOST_KEY_CHECKING=False unless the environment says
        # otherwise, which would override ansible.cfg: host keys are checked, always.
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        # ansible-runner finds ansible-playbook on PATH: make it the one beside this interpreter.
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
    }
    # Blanked, not removed: ansible-runner copies os.environ first and only adds to it.
    env.update({name: "" for name in secret_variables(os.environ)})
    if cluster.source is not None:
        env["UGRO_CONFIG"] = str(cluster.source)
    return env


def runner_arguments(
    cluster: Cluster,
    playbook: str,
    *,
    run_dir: Path,
    extravars: Mapping[str, Any] | None = None,
    limit: list[str] | None = None,
    check: bool = False,
    tags: list[str] | None = None,
    timeout: int | None = None,
    tag: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The keyword arguments for ansible_runner.run, built in one place (and unit-tested).

    `tag`: environment variables that mark the run's processes (ansible-playbook and the ssh
    it starts), so that they can be found, and ended, should this process die under them.
    """
    path = assets.playbook_path(playbook)
    cmdline = ["--check"] if check else []
    arguments: dict[str, Any] = {
        "private_data_dir": str(run_dir),
        "project_dir": str(assets.project_dir()),
        "playbook": str(path),
        "inventory": build_inventory(cluster),
        "envvars": {**ansible_environment(cluster), **(tag or {})},
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


def new_run_dir(cluster: Cluster, playbook: str, parent: Path | None = None) -> Path:
    """A fresh directory for one run under data/runs/, the oldest finished ones pruned."""
    parent = parent or cluster.paths.runs
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    run_dir = parent / f"{stamp}_{Path(playbook).stem}_{secrets.token_hex(3)}"
    run_dir.mkdir(parents=True, exist_ok=False)
    prune_runs(parent, keep=cluster.logging.keep_runs)
    return run_dir


# A run without a final status is still going (or died); its directory is left for a day.
_UNFINISHED_GRACE_S = 86400


def prune_runs(parent: Path, *, keep: int) -> list[Path]:
    """Remove all but the newest `keep` runs, never one that is still going."""
    runs = []
    try:
        for path in parent.iterdir():
            if path.is_dir():
                # A run's directory is written when it starts: its mtime orders runs that
                # started within the same second, which their names cannot.
                runs.append((path.stat().st_mtime_ns, path.name, path))
    except OSError:
        return []
    runs.sort()
    removed = []
    for mtime_ns, _, run in runs[: max(0, len(runs) - keep)]:
        finished = any(run.glob("artifacts/*/status"))
        if not finished and time.time() - mtime_ns / 1e9 < _UNFINISHED_GRACE_S:
            continue
        shutil.rmtree(run, ignore_errors=True)
        removed.append(run)
    if removed:
        log.debug("pruned %d old runs from %s", len(removed), parent)
    return removed


def run_playbook(
    cluster: Cluster,
    playbook: str,
    *,
    extravars: Mapping[str, Any] | None = None,
    limit: list[str] | None = None,
    check: bool = False,
    tags: list[str] | None = None,
    timeout: int | None = None,
    run_dir: Path | None = None,
    on_event: EventCallback | None = None,
    tag: Mapping[str, str] | None = None,
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
        tag=tag,
    )
    collector = _EventCollector(on_event)
    log.debug("ansible-runner %s in %s (limit=%s, check=%s)", playbook, run_dir, limit, check)
    # ansible-runner replaces SIGINT's and SIGTERM's handlers (to cancel the run) and never puts
    # them back: after its first run Ctrl-C would no longer interrupt ugro, nor SIGTERM end a
    # job's controller. They are restored once the run is over.
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        runner = ansible_runner.run(event_handler=collector, **arguments)
    finally:
        if threading.current_thread() is threading.main_thread():
            for number, handler in handlers.items():
                signal.signal(number, handler)
    artifact_dir = Path(runner.config.artifact_dir) if runner.config.artifact_dir else None
    _explain_host_keys(cluster, collector.hosts)
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
