"""A deployment's controller: keeps its server serving until `ugro serve down`.

Observe, decide, act, twice a second, as a job's controller does:

    heartbeat   `servectl watch` over SSH (ugro.nodes.link.ServeLink): the server's pid alive,
                /health, its figures. A node is lost only on two signals: no heartbeat for
                6 s and a fresh SSH connection failing too (about 11 s in all).
    serving     alive and /health 200: the figures go to state.json
    starting    alive, still loading
    restarting  the server is gone: started again after 1, 2, 4 ... 30 s; five deaths in a
                row without serving in between and the deployment has failed (the log's last
                line says why)
    lost        its node does not answer; when it does again, the server is checked and
                started again if it is gone
    stopping    a stop request: servectl stop (SIGTERM, grace, SIGKILL, nothing left, GPU memory
                released), then stopped
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from ugro.core.cluster import Cluster
from ugro.nodes.link import ServeLink
from ugro.records.deployments import (
    FAILED,
    LOST,
    RESTARTING,
    SERVING,
    STARTING,
    STOPPED,
    STOPPING,
    DeploymentFiles,
)

log = logging.getLogger(__name__)

TICK_S = 0.5
SILENT_S = 6.0
RECONNECT_S = 5.0
BACKOFF_S = (1, 2, 4, 8, 16, 30)
GIVE_UP_AFTER = 5
STOP_GRACE_S = 10.0


class DeploymentController:
    def __init__(self, cluster: Cluster, files: DeploymentFiles) -> None:
        self.files = files
        self.deployment = files.deployment()
        self.node = cluster.node(self.deployment.node)
        self.link = ServeLink(cluster, self.node, self.deployment.node_dir)
        self.state = files.state()
        self.deaths = 0  # in a row, without serving in between
        self.restart_at: float | None = None
        self.started_at = time.monotonic()  # beats older than this describe a server before it
        self.reconnect_at = 0.0
        self.written = 0.0

    def run(self) -> None:
        if self.state.state in (STOPPED, FAILED):
            return
        log.info("watching %s on %s", self.deployment.name, self.node.name)
        self.link.start()
        try:
            while True:
                if self.files.stop_requested():
                    self.teardown("stopped by the user")
                    return
                if self.step(time.monotonic()):
                    return
                time.sleep(TICK_S)
        finally:
            self.link.close()

    def step(self, now: float) -> bool:
        """One look and what follows from it; True when the deployment is over."""
        beat = self.link.latest()
        fresh = beat is not None and beat.received >= self.started_at
        if self.link.silent_for(now) > SILENT_S or self.link.stream_ended():
            if not self.link.probe():
                self.set(LOST, f"{self.node.name} does not answer (no heartbeat, SSH fails)")
            if now >= self.reconnect_at:
                self.reconnect_at = now + RECONNECT_S
                self.link.start()
            self.save(now)
            return False
        if not fresh or beat is None:
            self.save(now)
            return False
        report = beat.report
        if report.get("alive"):
            self.restart_at = None
            if report.get("health") == 200:
                self.deaths = 0
                since = self.state.serving_since
                if self.state.state != SERVING or since is None:
                    since = time.time()
                    log.info("%s serves on %s", self.deployment.name, self.deployment.url)
                stats = report.get("stats") or self.state.stats
                self.state = replace(
                    self.state, serving_since=since, stats=stats, pid=report.get("pid")
                )
                self.set(SERVING, "")
            elif self.state.state not in (STARTING, RESTARTING):
                self.set(STARTING, "loading the models")
        elif self.restart_at is None:
            return self.server_died(now, report)
        elif now >= self.restart_at:
            self.restart(now)
        self.save(now)
        return False

    def server_died(self, now: float, report: dict[str, Any]) -> bool:
        tail = [line for line in report.get("log_tail") or [] if line.strip()]
        why = tail[-1].strip()[:200] if tail else "no log"
        self.deaths += 1
        if self.deaths > GIVE_UP_AFTER:
            self.teardown(
                f"the server exited {self.deaths - 1} times without serving; last: {why}",
                final=FAILED,
            )
            return True
        delay = BACKOFF_S[min(self.deaths - 1, len(BACKOFF_S) - 1)]
        self.restart_at = now + delay
        log.warning(
            "%s: the server is gone (%s); restarting in %ss", self.deployment.name, why, delay
        )
        self.set(RESTARTING, f"the server exited ({why}); restarting in {delay}s")
        self.save(now)
        return False

    def restart(self, now: float) -> None:
        answer = self.link.start_server()
        self.restart_at = None
        self.started_at = time.monotonic()
        if "error" in answer or "unreachable" in answer:
            message = str(answer.get("error") or answer.get("unreachable"))
            log.warning("%s: restart refused: %s", self.deployment.name, message)
            self.set(RESTARTING, f"restart refused: {message}")
            self.restart_at = now + BACKOFF_S[-1]
            return
        self.state = replace(self.state, restarts=self.state.restarts + 1, pid=answer.get("pid"))
        log.info("%s: server started again (pid %s)", self.deployment.name, answer.get("pid"))
        self.set(RESTARTING, "started again; loading the models")

    def teardown(self, why: str, *, final: str = STOPPED) -> None:
        self.set(STOPPING, why)
        self.save(time.monotonic(), force=True)
        self.link.close()
        result = self.link.stop(grace=STOP_GRACE_S)
        if "unreachable" in result:
            message = (
                f"{why}; {self.node.name} was unreachable ({result['unreachable']}): its server "
                "may still run there"
            )
        elif result.get("left") or result.get("gpu_held"):
            message = (
                f"{why}; left on {self.node.name}: processes {result.get('left')}, GPU memory "
                f"held by {result.get('gpu_held')}"
            )
        else:
            checked = ", GPU memory released" if result.get("gpu_checked") else ""
            message = f"{why}; nothing left on {self.node.name}{checked}"
        log.info("%s: %s", self.deployment.name, message)
        self.state = replace(self.state, pid=None, serving_since=None)
        self.set(final, message)
        self.save(time.monotonic(), force=True)

    def set(self, state: str, message: str) -> None:
        if state != self.state.state or message != self.state.message:
            if state != self.state.state:
                log.info("%s: %s -> %s %s", self.deployment.name, self.state.state, state, message)
            self.state = replace(self.state, state=state, message=message)
            self.written = 0.0  # write at once

    def save(self, now: float, *, force: bool = False) -> None:
        if force or now - self.written >= 1.0:
            self.state = replace(self.state, updated=time.time())
            self.files.write_state(self.state)
            self.written = now
