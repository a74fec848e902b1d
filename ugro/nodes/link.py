"""A controller's line to a node: its heartbeat stream, an SSH probe, a stop (HeartbeatLink);
a job's (NodeLink, jobctl) and a deployment's (ServeLink, servectl).

Every job carries ugro's node-side job control (code/ugro_jobctl.py, from roles/ugro_job). The
controller keeps one `jobctl watch` running on each node, over SSH (the master's own: a local
process), which prints a report of the job there every second: that line is the node's
heartbeat. A node is lost only on two independent signals: its heartbeat has been missing for
the grace period, and a fresh SSH connection (`true`) fails too. One lost packet, or a stream
that died while the node is fine, costs a reconnect, never the job.

Nothing here reaches a node except by SSH, with the key, port and known_hosts Ansible uses and
host-key checking on; the remote command is a fixed argv quoted with shlex.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from ugro.core.cluster import Cluster, Node
from ugro.core.layout import CODE_DIR, JOB_ID_PATTERN, JOBCTL_FILE
from ugro.nodes import hostkeys
from ugro.nodes.ssh import on_node

log = logging.getLogger(__name__)

JOBCTL = f"{CODE_DIR}/{JOBCTL_FILE}"
# ssh notices a dead connection by itself after this many silent seconds (2 s x 3).
_KEEPALIVE = ["-o", "ServerAliveInterval=2", "-o", "ServerAliveCountMax=3"]


@dataclass
class Beat:
    """The node's latest report and when it arrived (time.monotonic() on the master)."""

    report: dict[str, Any]
    received: float


class HeartbeatLink:
    """A node's heartbeat stream (a watch command that prints a JSON report each interval, held
    open over SSH) and a fresh SSH probe: what a job's controller and a deployment's controller
    both decide a node's fate by. Subclasses say what to watch (`watch_command`)."""

    def __init__(self, cluster: Cluster, node: Node, *, interval: float = 1.0):
        self.cluster = cluster
        self.node = node
        self.interval = interval
        self.beat: Beat | None = None
        self.started = time.monotonic()
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def watch_command(self) -> list[str]:
        raise NotImplementedError

    # -- commands on the node ---------------------------------------------------------------
    def argv(self, remote: list[str], *, keepalive: bool = False) -> list[str]:
        """`remote` run on the node: as it is on the master, else through ssh."""
        return on_node(self.cluster, self.node, remote, options=_KEEPALIVE if keepalive else ())

    def run_json(self, remote: list[str], *, timeout: float = 60) -> dict[str, Any]:
        """`remote` run once on the node; the JSON object it prints, or {"unreachable": why}."""
        try:
            done = subprocess.run(
                self.argv(remote),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"unreachable": f"no answer within {timeout:.0f}s"}
        try:
            report = json.loads(done.stdout)
        except ValueError:
            why = done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no output"]
            said = hostkeys.explain(self.cluster, self.node, " ".join(why)) or why[-1]
            return {"unreachable": f"exit {done.returncode}: {said}"}
        if not isinstance(report, dict):
            return {"unreachable": "unreadable report"}
        return report

    # -- the heartbeat stream -------------------------------------------------------------------
    def start(self) -> None:
        """(Re)start the node's watch stream; its reports arrive in a thread of their own."""
        self.close()
        argv = self.argv(self.watch_command(), keepalive=True)
        self.started = time.monotonic()
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,  # held open: the node's watcher ends when we hang up
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._process = process
        threading.Thread(target=self._read, args=(process,), daemon=True).start()

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                report = json.loads(line)
            except ValueError:
                continue
            if isinstance(report, dict) and report.get("beat"):
                with self._lock:
                    self.beat = Beat(report, time.monotonic())

    def latest(self) -> Beat | None:
        with self._lock:
            return self.beat

    def stream_ended(self) -> bool:
        """The heartbeat stream's ssh is gone (the connection closed: the node's sshd died, or
        reset it); a quiet stream may only be slow, an ended one will not speak again."""
        process = self._process
        return process is not None and process.poll() is not None

    def silent_for(self, now: float) -> float:
        """Seconds since the last heartbeat (or since the stream started, before the first)."""
        beat = self.latest()
        return now - (beat.received if beat else self.started)

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            if process.stdin:
                process.stdin.close()
        except OSError:
            pass
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    # -- one-off commands -----------------------------------------------------------------------
    def probe(self) -> bool:
        """A fresh SSH connection that runs `true`: the second, independent signal."""
        if self.node.connection == "local":
            return True
        timeout = self.cluster.ssh.connect_timeout + 5
        try:
            done = subprocess.run(
                self.argv(["true"]),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0


class NodeLink(HeartbeatLink):
    """A job's link to one of its nodes: `jobctl watch` as the heartbeat, jobctl's actions."""

    def __init__(self, cluster: Cluster, node: Node, job_id: str, *, interval: float = 1.0):
        super().__init__(cluster, node, interval=interval)
        self.job_id = job_id
        self.job_dir = str(PurePosixPath(node.experiments_path) / job_id)

    def watch_command(self) -> list[str]:
        return self.jobctl("watch", "--interval", str(self.interval))

    def jobctl(self, action: str, *extra: str) -> list[str]:
        return [
            self.node.python,
            f"{self.job_dir}/{JOBCTL}",
            action,
            "--job-id",
            self.job_id,
            "--job-id-pattern",
            JOB_ID_PATTERN,
            "--job-dir",
            self.job_dir,
            *extra,
        ]

    def run_jobctl(self, action: str, *extra: str, timeout: float = 60) -> dict[str, Any]:
        """One jobctl action on the node; its JSON report, or {"unreachable": why}."""
        return self.run_json(self.jobctl(action, *extra), timeout=timeout)

    def stop(self, *, grace: float) -> dict[str, Any]:
        """Every process of the job on the node ended and checked gone (SIGTERM, grace, SIGKILL)."""
        return self.run_jobctl("stop", "--grace", str(grace), timeout=grace + 60)


class ServeLink(HeartbeatLink):
    """A deployment's link to its node: `servectl watch` (whether the server lives, its health
    and figures) as the heartbeat; servectl's start and stop."""

    def __init__(self, cluster: Cluster, node: Node, deployment_dir: str, *, interval: float = 1.0):
        super().__init__(cluster, node, interval=interval)
        self.deployment_dir = deployment_dir

    def servectl(self, action: str, *extra: str) -> list[str]:
        return [
            self.node.python,
            f"{self.deployment_dir}/code/servectl.py",
            action,
            "--dir",
            self.deployment_dir,
            *extra,
        ]

    def watch_command(self) -> list[str]:
        return self.servectl("watch", "--interval", str(self.interval))

    def start_server(self) -> dict[str, Any]:
        return self.run_json(self.servectl("start", "--python", self.node.python), timeout=60)

    def stop(self, *, grace: float) -> dict[str, Any]:
        """Every process of the deployment ended and checked gone (SIGTERM, grace, SIGKILL)."""
        return self.run_json(self.servectl("stop", "--grace", str(grace)), timeout=grace + 60)
