#!/usr/bin/python
"""Ansible module: a daemon started, stopped or restarted by its pid file, without systemd."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: ugro_daemon
short_description: Start, stop or restart a daemon by its pid file, where PID 1 is not systemd
description:
  - A daemon runs when its pid file names a live process whose command is C(name); a stale
    pid file (a killed daemon, a rebooted container) counts as stopped.
  - C(started) runs C(argv) (the daemon detaches itself) and waits for its pid file.
  - C(stopped) sends SIGTERM, waits C(timeout), then SIGKILL, and removes the pid file.
  - Reports changed only when it started or stopped something, so a second run changes nothing.
options:
  name:
    description: The daemon's command name (as in /proc/PID/comm), e.g. slurmd.
    type: str
    required: true
  pidfile:
    description: Where the daemon writes its pid.
    type: path
    required: true
  argv:
    description: The command that starts it; needed for C(started) and C(restarted).
    type: list
    elements: str
    default: []
  state:
    description: What to make true.
    type: str
    choices: [started, stopped, restarted]
    default: started
  timeout:
    description: Seconds to wait for the pid file, or for the process to end.
    type: float
    default: 30
"""

RETURN = r"""
pid:
  description: The daemon's pid (absent once stopped).
  type: int
  returned: when it runs
"""


def running_pid(name, pidfile):
    try:
        with open(pidfile) as handle:
            pid = int(handle.read().split()[0])
        with open(f"/proc/{pid}/comm") as handle:
            comm = handle.read().strip()
        with open(f"/proc/{pid}/stat") as handle:
            zombie = handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, ValueError, IndexError):
        return None
    # comm is cut at 15 characters.
    return pid if comm == name[:15] and not zombie else None


def wait_for(condition, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    return condition()


def stop(name, pidfile, timeout):
    pid = running_pid(name, pidfile)
    if pid is None:
        return False, None
    os.kill(pid, signal.SIGTERM)
    if not wait_for(lambda: running_pid(name, pidfile) != pid, timeout):
        os.kill(pid, signal.SIGKILL)
        if not wait_for(lambda: running_pid(name, pidfile) != pid, 5):
            return True, f"{name} (pid {pid}) survived SIGKILL"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pidfile)
    return True, None


def start(name, pidfile, argv, timeout):
    if not argv:
        return None, "argv is needed to start " + name
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        return None, f"{' '.join(argv)} exited {done.returncode}: {said[-1] if said else ''}"
    pid = wait_for(lambda: running_pid(name, pidfile), timeout)
    if pid is None:
        return None, f"{name} started but no live pid in {pidfile} within {timeout:g} s"
    return pid, None


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "pidfile": {"type": "path", "required": True},
            "argv": {"type": "list", "elements": "str", "default": []},
            "state": {
                "type": "str",
                "choices": ["started", "stopped", "restarted"],
                "default": "started",
            },
            "timeout": {"type": "float", "default": 30.0},
        },
        supports_check_mode=True,
    )
    name, pidfile, state = module.params["name"], module.params["pidfile"], module.params["state"]
    timeout, argv = module.params["timeout"], module.params["argv"]
    pid = running_pid(name, pidfile)
    if state == "started" and pid is not None:
        module.exit_json(changed=False, pid=pid)
    if state == "stopped" and pid is None:
        module.exit_json(changed=False)
    if module.check_mode:
        module.exit_json(changed=True)
    if state in ("stopped", "restarted"):
        _, error = stop(name, pidfile, timeout)
        if error:
            module.fail_json(msg=error)
        if state == "stopped":
            module.exit_json(changed=True)
    pid, error = start(name, pidfile, argv, timeout)
    if error:
        module.fail_json(msg=error)
    module.exit_json(changed=True, pid=pid)


if __name__ == "__main__":
    main()
