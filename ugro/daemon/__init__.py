"""The UGRO daemon: the queue's scheduler, the cluster's health monitor, the jobs' supervisor.

    python -m ugro.daemon [--config PATH]     (what `ugro daemon start` runs, detached)
    ugro daemon run                           (the same in the foreground: systemd, a terminal)

One per data directory (a lock the kernel frees when it dies). It owns no job: each job has its
controller (ugro.controller), which goes on whether or not the daemon runs. Its loop
(ugro.daemon.loop) reconciles what is recorded with what runs; its parts watch the nodes'
health (probes), notify (notices, notify), and are started and stopped by a command (service).
By default it also serves the dashboard (ugro.web) on a thread, on loopback unless cluster.yaml's
dashboard section says otherwise; `dashboard.with_daemon: false` leaves it out.

What clients read is data/daemon/state.json, through ugro.records.daemon_files: they never
import the daemon.
"""
