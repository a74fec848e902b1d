"""A launch whose launcher died: its Ansible run lives on (ansible-playbook is a child that does
not die with ugro) and could still start the job. Its processes carry the launch's tag
(ugro.launch.attempt.LAUNCH_TAG) in their environment; the controller ends them first."""

from __future__ import annotations

from ugro.core import processes
from ugro.launch.attempt import LAUNCH_TAG


def end_orphaned_launch(job_id: str, grace: float = 5.0) -> int:
    """End what is left of a launch run for `job_id` on this machine (ansible-playbook and its
    ssh); how many processes there were."""
    found = processes.tagged(LAUNCH_TAG, job_id)
    if found:
        processes.end(lambda: processes.tagged(LAUNCH_TAG, job_id), grace=grace, wait=grace)
    return len(found)
