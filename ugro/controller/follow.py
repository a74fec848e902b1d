"""Following a job: the master's own files, and what the job's controller sees.

One loop for `ugro launch` (metrics for the progress line, the controller's "stalled for N s")
and `ugro logs --follow` (the ranks' lines). The job's controller (ugro.controller) decides its
state; following only reads: the master's experiment directory, where the master's ranks write,
every half second, the history, and the controller's state file. With collect_logs, the other
nodes' logs are brought home every `check_every` seconds from the nodes whose heartbeat the
controller hears (an Ansible run; a silent node would only make it wait). A controller found
dead is started again. Following ends when the job has ended and its controller has nothing
more to do for it (no retry coming).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ugro.core.cluster import Cluster
from ugro.core.files import JsonLines
from ugro.launch.job_playbooks import collect_logs as collect_node_logs
from ugro.records.controller_files import ControllerHandle, ControllerState
from ugro.records.history import JobRecord, Jobs

# A node whose heartbeat the controller has missed this long is not asked for its logs.
_SILENT_S = 5.0
# A dead controller is started again at most this often, and this many times.
_REVIVE_EVERY_S = 5.0
_REVIVE_MAX = 3


def follow(
    cluster: Cluster,
    job_id: str,
    *,
    on_metrics: Callable[[dict[str, Any]], None] | None = None,
    on_poll: Callable[[], None] | None = None,
    on_status: Callable[[ControllerState], None] | None = None,
    collect_logs: bool = False,
    check_every: float = 10.0,
    poll: float = 0.5,
) -> JobRecord:
    """Watch a job until it has ended for good; return its record then.

    on_metrics gets each new metrics record, on_poll is called after every look (to read the
    logs, say), on_status with the controller's state. With collect_logs the nodes' logs come
    home at once and then every check_every seconds.
    """
    jobs = Jobs(cluster)
    directory = jobs.experiment_dir(job_id)
    controller = ControllerHandle(directory)
    metrics = JsonLines(directory / "metrics.jsonl")
    revived = 0
    next_revive = time.monotonic()
    next_collect = time.monotonic()

    def emit() -> None:
        if on_metrics is not None:
            for entry in metrics.new_records():
                on_metrics(entry)
        if on_poll is not None:
            on_poll()

    while True:
        emit()
        record = jobs.find(job_id)
        state = controller.state()
        if on_status is not None:
            on_status(state)
        if not controller.exists():
            return record  # a job from before controllers: as the history says
        alive = controller.alive()
        if not record.active and state.past_retries:
            break
        now = time.monotonic()
        if not alive and now >= next_revive:
            if revived >= _REVIVE_MAX:
                break  # it keeps dying: its log (controller/controller.log) says why
            # The controller died (kill -9, say): start it again; it carries on from the history.
            controller.ensure()
            revived += 1
            next_revive = now + _REVIVE_EVERY_S
        if collect_logs and now >= next_collect:
            nodes = [
                name
                for name in jobs.nodes(record)
                if name != cluster.master.name and state.silent_s.get(name, 0.0) < _SILENT_S
            ]
            collect_node_logs(cluster, job_id, nodes)
            next_collect = time.monotonic() + check_every
            continue
        time.sleep(poll)
    emit()
    return record
