"""A launch's preflight from the daemon's fresh reports, instead of probing every node again.

The launch playbook probes every node first (its interface, GPUs, environment, the UGRO jobs
there and, on the lead, a free rendezvous port): one module round trip, a second or so before
the first training step. With the daemon running, all but the port is known: its light probe
is the same probe, a minute old at most. A node's report is taken from the daemon when:

- the daemon runs, and its last probe of the node found it healthy within two probe intervals;
- the report holds torch's facts (from the node's cache) and the node's interface;
- for the lead, the lead is this machine: its free port and its UGRO jobs are read here, now,
  with the probe's own functions (a remote lead is probed as before).

What changes by the second is never taken on trust: a report that saw processes of a job this
master's history does not have running now (one that ended since, another project's, leftovers)
is not used, so the probe looks again and the preflight judges what is there now; to the
others, every job the history says runs on the node is added. A node without all of this is
probed as before.
"""

from __future__ import annotations

import logging
import time
from types import ModuleType
from typing import Any

from ugro.core.cluster import Cluster
from ugro.nodes import scripts
from ugro.records.daemon_files import DaemonFiles
from ugro.records.history import Jobs

log = logging.getLogger(__name__)


def probe_module() -> ModuleType:
    """The health role's probe as a module of this process (stdlib only)."""
    return scripts.load(scripts.PROBE, "ugro_probe")


def known_reports(
    cluster: Cluster, nodes: list[str], lead: str, job_id: str
) -> dict[str, dict[str, Any]]:
    """The reports a launch may use for `nodes` instead of probing them ({} without a daemon)."""
    state = DaemonFiles(cluster.paths.data).live_state()
    if state is None:
        return {}
    now = time.time()
    max_age = 2 * cluster.daemon.probe_interval_s + 30
    samples, reports = state.nodes, state.reports
    running: dict[str, dict[str, list[int]]] = {}
    jobs = Jobs(cluster)
    for record in jobs.records().values():
        if record.active and record.job_id != job_id:
            for name in jobs.nodes(record):
                running.setdefault(name, {})[record.job_id] = []
    everywhere = {job for on_node in running.values() for job in on_node}
    known = {}
    for name in nodes:
        sample = samples.get(name) or {}
        entry = reports.get(name) or {}
        report = dict(entry.get("report") or {})
        fresh = now - float(entry.get("at") or 0) <= max_age
        if sample.get("status") != "up" or not fresh or not report.get("interface"):
            continue
        if not (report.get("env") or {}).get("torch_version"):
            continue
        if name == lead:
            node = cluster.node(name)
            if node.connection != "local":
                continue  # its free port needs a look on the node itself
            probe = probe_module()
            report["free_port"] = probe.free_port(node.address, cluster.launch.master_port)
            report["ugro_jobs"] = probe.jobs_here()  # read now: the preflight judges them
        elif set(report.get("ugro_jobs") or {}) - everywhere:
            continue  # it saw a job that is not running now: look again
        report["ugro_jobs"] = {**(report.get("ugro_jobs") or {}), **running.get(name, {})}
        known[name] = report
    if known:
        log.info("taking the daemon's reports for %s", ", ".join(sorted(known)))
    return known
