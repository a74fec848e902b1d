"""The daemon's watch over the nodes' health: a light probe of every node each
`daemon.probe_interval_seconds`, a deep one (`ugro health --deep`) hourly and for a node that came
back or whose torch facts are not cached, on idle nodes only (ugro.health.monitor probes;
this decides when, and keeps the verdicts).

Probes run in a thread pool so that the daemon's loop never waits for a node; each verdict goes
to data/health_history.jsonl, a node going down or coming back is notified.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Collection, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ugro.core.cluster import Cluster
from ugro.daemon.notify import notify
from ugro.health import monitor

log = logging.getLogger(__name__)

DEEP_TIMEOUT_S = 900.0


class HealthWatch:
    def __init__(self, cluster: Cluster, config: str | None, reports: Mapping[str, Any]) -> None:
        self.cluster = cluster
        self.config = config
        self.history = cluster.paths.data / monitor.HISTORY
        # Each node's verdict from this daemon's own probes: until its first, a node is "not
        # probed yet" (an old verdict from the history must not start a job on a dead node).
        self.samples: dict[str, monitor.Sample] = {}
        # The last verdict the history holds, to compare the first probe with (a GPU lost).
        self.previous = monitor.latest(monitor.read_history(self.history, tail=1 << 20))
        # Each node's last healthy report with torch's facts: what a launch may use instead of
        # probing the node again (ugro.health.fresh_reports).
        self.reports: dict[str, dict[str, Any]] = {k: dict(v) for k, v in reports.items()}
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="probe")
        self.light: Future[list[monitor.Sample]] | None = None
        self.deep: Future[list[monitor.Sample]] | None = None
        self.next_light = 0.0  # at once
        self.last_light = self.last_deep = 0.0
        # Hourly; sooner for a node that came back, or whose light probe finds no torch facts
        # in its cache (a launch then has to probe it: the deep probe fills the cache).
        self.next_deep = time.time() + cluster.daemon.deep_probe_interval_s
        self.deep_wanted: set[str] = set()
        self.deep_nodes: set[str] = set()  # under a deep probe now: no job starts there

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def start_light(self, now: float) -> None:
        if self.light is None and now >= self.next_light:
            previous = {**self.previous, **self.samples}
            self.light = self.pool.submit(monitor.probe_all, self.cluster, now, previous)

    def collect(self, now: float) -> bool:
        """Take in finished probes; True if a node's verdict changed."""
        fresh: list[monitor.Sample] = []
        if self.light is not None and self.light.done():
            fresh += _result(self.light, "light probe")
            self.light = None
            self.last_light = now
            self.next_light = now + self.cluster.daemon.probe_interval_s
        if self.deep is not None and self.deep.done():
            fresh += _result(self.deep, "deep probe")
            self.deep = None
            self.deep_nodes = set()
            self.last_deep = now
        if not fresh:
            return False
        monitor.record(self.history, fresh)
        changed = False
        for sample in fresh:
            changed |= self._take(sample)
        return changed

    def _take(self, sample: monitor.Sample) -> bool:
        before = self.samples.get(sample.node) or self.previous.get(sample.node)
        self.samples[sample.node] = sample
        if sample.healthy and (sample.report.get("env") or {}).get("torch_version"):
            self.reports[sample.node] = {"at": sample.at, "report": dict(sample.report)}
        else:
            self.reports.pop(sample.node, None)
            if sample.kind == "light" and sample.status != "down" and sample.report:
                self.deep_wanted.add(sample.node)  # torch's facts not cached there
        changed = before is None or (before.status, before.problems) != (
            sample.status,
            sample.problems,
        )
        if changed:
            log.info("%s: %s", sample.node, sample.why if not sample.healthy else "up")
        if before is not None and before.status != "down" and sample.status == "down":
            notify(self.cluster, "node_down", node=sample.node, reason=sample.why)
        if before is not None and before.status == "down" and sample.status != "down":
            notify(self.cluster, "node_up", node=sample.node, reason=sample.why)
            self.deep_wanted.add(sample.node)  # back: look at it closely
        return changed

    def start_deep(self, now: float, busy: Collection[str]) -> None:
        """`ugro health --deep` on the idle nodes that answer: torch imported, GPUs checked,
        never on a node a job runs on."""
        if self.deep is not None or not self.last_light:
            return
        if not self.deep_wanted and now < self.next_deep:
            return
        idle = [
            name
            for name in self.cluster.node_names
            if name not in busy
            and (sample := self.samples.get(name)) is not None
            and sample.status != "down"
            and not sample.loaded
        ]
        wanted = [n for n in idle if n in self.deep_wanted] if now < self.next_deep else idle
        self.deep_wanted -= set(wanted)
        if now >= self.next_deep:
            self.next_deep = now + self.cluster.daemon.deep_probe_interval_s
        if wanted:
            self.deep_nodes = set(wanted)
            self.deep = self.pool.submit(self._deep_probe, wanted)

    def _deep_probe(self, names: list[str]) -> list[monitor.Sample]:
        argv = [sys.executable, "-m", "ugro"]
        argv += ["--config", self.config] if self.config else []
        argv += ["health", "--now", "--deep", "--json"]
        for name in names:
            argv += ["--node", name]
        done = subprocess.run(
            argv, capture_output=True, timeout=DEEP_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL
        )
        try:
            summary = json.loads(done.stdout)
        except ValueError:
            log.warning("deep probe of %s: no verdict (exit %d)", ", ".join(names), done.returncode)
            return []
        return monitor.deep_samples(summary, time.time()) if isinstance(summary, dict) else []


def _result(future: Future[list[monitor.Sample]], what: str) -> list[monitor.Sample]:
    try:
        return future.result()
    except Exception:  # a probe must never take the daemon down
        log.exception("%s failed", what)
        return []
