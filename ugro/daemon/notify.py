"""Notifications: cluster.yaml's `notify.command` run on a job's end and on a node going down.

The command is an argv (never a shell string), run without waiting for it (a slow web hook must
not hold the daemon up) and killed after `notify.timeout_seconds`. The event arrives in its
environment, never in its arguments:

    UGRO_EVENT      job_ended | node_down | node_up
    UGRO_JOB_ID, UGRO_JOB_NAME, UGRO_JOB_STATE, UGRO_ATTEMPT    (job_ended)
    UGRO_NODE       (node_down, node_up; for job_ended the node of the first failure, if any)
    UGRO_REASON     one line: why the job ended as it did, or why the node is down
    UGRO_CLUSTER    the cluster's name

Secrets the daemon holds (HF_TOKEN) are kept out of the command's environment.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading

from ugro.core.cluster import Cluster

log = logging.getLogger(__name__)

# Never handed to a notification command, whatever it is.
_SECRETS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def event_environment(cluster: Cluster, event: str, **fields: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SECRETS}
    env["UGRO_EVENT"] = event
    env["UGRO_CLUSTER"] = cluster.name
    for key, value in fields.items():
        if value is not None:
            env[f"UGRO_{key.upper()}"] = " ".join(str(value).split())[:500]
    return env


def notify(cluster: Cluster, event: str, **fields: object) -> threading.Thread | None:
    """Run the notification command for `event`, in the background; None if there is none."""
    argv = list(cluster.daemon.notify_command)
    if not argv:
        return None
    env = event_environment(cluster, event, **fields)
    timeout = cluster.daemon.notify_timeout_s

    def run() -> None:
        try:
            done = subprocess.run(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            log.warning("notify %s: %s did not finish within %ds", event, argv[0], timeout)
            return
        except OSError as exc:
            log.warning("notify %s: cannot run %s: %s", event, argv[0], exc.strerror)
            return
        if done.returncode != 0:
            tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            log.warning("notify %s: %s exited %d %s", event, argv[0], done.returncode, tail[0])
        else:
            log.info("notified %s (%s)", event, fields.get("job_id") or fields.get("node"))

    thread = threading.Thread(target=run, name=f"notify-{event}", daemon=True)
    thread.start()
    return thread
