"""Every node's heartbeat during an attempt, and where a silent node is decided lost.

The controller keeps one `jobctl watch` stream per node (ugro.nodes.link): a JSON report a
second, the node's heartbeat, fed to the attempt's tracker (ugro.controller.detect). A node is
lost only on two independent signals: its heartbeat has been missing for the grace period
(ControllerOptions.heartbeat_grace_s, 6 s), and a fresh SSH connection (`true`) fails too. A
heartbeat can go missing for reasons that are not the node's (one lost packet, a stream whose
ssh died), so a node that answers the probe gets its stream restarted, never the job ended.
With a 5 s connect timeout a node is lost about 11 s after its last beat.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ugro.controller.context import ControllerContext
from ugro.controller.detect import AttemptTracker
from ugro.nodes.link import NodeLink

log = logging.getLogger(__name__)

# A node silent this long (heartbeats come every second) holds a decision back until it is
# known to be alive or lost.
SILENT_S = 2.5


@dataclass
class _Probe:
    """The second signal: a fresh SSH connection, in a thread of its own."""

    thread: threading.Thread
    answered: list[bool] = field(default_factory=list)

    @classmethod
    def start(cls, link: NodeLink) -> _Probe:
        answered: list[bool] = []
        thread = threading.Thread(target=lambda: answered.append(link.probe()), daemon=True)
        thread.start()
        return cls(thread, answered)


class Heartbeats:
    """The attempt's nodes' streams, read into its tracker."""

    def __init__(self, ctx: ControllerContext, nodes: list[str]) -> None:
        self.ctx = ctx
        self.links = {name: ctx.link(name) for name in nodes}
        self.grace_s = ctx.options.heartbeat_grace_s
        self._probes: dict[str, _Probe] = {}
        self._seen: dict[str, float] = {}

    @contextmanager
    def streaming(self) -> Iterator[Heartbeats]:
        for link in self.links.values():
            link.start()
        try:
            yield self
        finally:
            for link in self.links.values():
                link.close()

    def look(self, now: float, tracker: AttemptTracker) -> bool:
        """Feed every new heartbeat to the tracker, and add the nodes found lost to it. True
        while some node is unsettled (silent, or its stream ended) and not yet known lost: a
        decision about a failure waits for its verdict."""
        unsettled = False
        for name, link in self.links.items():
            beat = link.latest()
            if beat is not None and beat.received > self._seen.get(name, 0.0):
                self._seen[name] = beat.received
                tracker.observe(name, beat.report, beat.received)
            silent = link.silent_for(now)
            # A node whose stream ended (its processes killed, as by a power cut) is not yet
            # known lost: its peers' ranks fail at once, before its silence counts; wait for
            # its verdict rather than blame them.
            if silent > SILENT_S or link.stream_ended():
                unsettled = True
            if silent > self.grace_s:
                self._second_signal(name, link, now, tracker)
        return unsettled

    def _second_signal(
        self, name: str, link: NodeLink, now: float, tracker: AttemptTracker
    ) -> None:
        probe = self._probes.get(name)
        if probe is None:
            self._probes[name] = _Probe.start(link)
            return
        if probe.thread.is_alive():
            return
        del self._probes[name]
        silent = link.silent_for(now)
        if probe.answered and probe.answered[0]:
            log.warning(
                "%s: no heartbeat from %s for %.0fs, but it answers SSH: reconnecting",
                self.ctx.job_id,
                name,
                silent,
            )
            link.start()
            return
        beat = link.latest()
        last = beat.received if beat else link.started
        tracker.add_unreachable(
            name, last, f"unreachable: no heartbeat for {now - last:.0f}s and SSH to it failed"
        )

    def silence(self, now: float) -> dict[str, float]:
        """Seconds since each node's last heartbeat."""
        return {name: round(link.silent_for(now), 1) for name, link in self.links.items()}

    def longest_wait(self) -> float:
        """How long a decision may wait for an unsettled node: its grace, the probe's connect
        timeout, and a margin."""
        return self.grace_s + self.ctx.cluster.ssh.connect_timeout + 6
