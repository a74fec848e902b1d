"""A launch's known reports: taken from a live daemon's fresh, healthy probes only, never
trusting what changes by the second (the lead's port and jobs are read here and now)."""

from __future__ import annotations

import fcntl
import json
import os
import time

from ugro.health.fresh_reports import known_reports
from ugro.records.daemon_files import DaemonFiles
from ugro.records.history import Jobs

REPORT = {"interface": "lo", "env": {"torch_version": "2.13.0"}, "ugro_jobs": {}}


def daemon_state(cluster, nodes: dict, reports: dict) -> int:
    """A daemon's state and its lock held by this process (as a live daemon holds it)."""
    files = DaemonFiles(cluster.paths.data)
    files.dir.mkdir(parents=True, exist_ok=True)
    files.state_path.write_text(json.dumps({"nodes": nodes, "reports": reports}))
    fd = os.open(files.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def test_no_daemon_no_known_reports(cluster) -> None:
    assert known_reports(cluster, ["m"], "m", "j_20260101_000000") == {}


def test_the_lead_gets_a_free_port_and_its_jobs_read_now(cluster) -> None:
    now = time.time()
    fd = daemon_state(
        cluster, {"m": {"status": "up", "at": now}}, {"m": {"at": now, "report": REPORT}}
    )
    try:
        known = known_reports(cluster, ["m"], "m", "j_20260101_000000")
        assert set(known) == {"m"}
        assert isinstance(known["m"]["free_port"], int)
        assert known["m"]["free_port"] >= cluster.launch.master_port
        # A stale verdict, an unhealthy node, or a report without torch's facts: probe again.
        stale = now - 10 * cluster.daemon.probe_interval_s
        for nodes, reports in [
            ({"m": {"status": "up"}}, {"m": {"at": stale, "report": REPORT}}),
            ({"m": {"status": "down"}}, {"m": {"at": now, "report": REPORT}}),
            ({"m": {"status": "up"}}, {"m": {"at": now, "report": {"interface": "lo"}}}),
        ]:
            DaemonFiles(cluster.paths.data).state_path.write_text(
                json.dumps({"nodes": nodes, "reports": reports})
            )
            assert known_reports(cluster, ["m"], "m", "j_20260101_000000") == {}
    finally:
        os.close(fd)


def test_a_worker_report_that_saw_an_ended_job_is_not_used(cluster) -> None:
    # A worker's report is taken as the probe left it, plus the jobs the history runs there.
    now = time.time()
    jobs = Jobs(cluster)
    jobs.create("other_20260101_000000")
    jobs.record("other_20260101_000000", "launching", nodes=["w"])
    seen = {**REPORT, "ugro_jobs": {"other_20260101_000000": [5]}}
    old = {**REPORT, "ugro_jobs": {"gone_20200101_000000": [7]}}
    from dataclasses import replace

    from ugro.core.cluster import Node

    worker = Node(**{**cluster.master.__dict__, "name": "w", "rank": 1, "role": "worker"})
    two = replace(cluster, nodes=(cluster.master, worker))
    fd = daemon_state(
        two,
        {"w": {"status": "up", "at": now}},
        {"w": {"at": now, "report": seen}},
    )
    try:
        known = known_reports(two, ["m", "w"], "m", "j_20260101_000000")
        assert set(known) == {"w"}  # the master has no report: it is probed
        assert set(known["w"]["ugro_jobs"]) == {"other_20260101_000000"}
        DaemonFiles(two.paths.data).state_path.write_text(
            json.dumps(
                {"nodes": {"w": {"status": "up"}}, "reports": {"w": {"at": now, "report": old}}}
            )
        )
        assert known_reports(two, ["m", "w"], "m", "j_20260101_000000") == {}
    finally:
        os.close(fd)
