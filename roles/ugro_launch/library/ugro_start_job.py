#!/usr/bin/python
"""Ansible module: start a job on this node (module_utils/ugro_start.py), set its pid."""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.ugro_start import run

DOCUMENTATION = r"""
module: ugro_start_job
short_description: Write a UGRO job's files on a node and start its supervisor detached
description:
  - Writes each file into the job directory atomically with its mode (a name may hold
    directories inside the job directory, as C(code/scripts/ugro_rank.py)); a file marked
    C(check=bash) must pass C(bash -n) before it lands.
  - Starts the C(start) script with C(setsid --fork) and waits for the pid it writes.
  - Refuses a job directory that already holds a pid, so a job never starts twice.
  - In check mode the scripts are checked in a scratch directory and nothing is started.
options:
  job_dir:
    description: The job's directory on the node; created with mode 0750, with C(logs/).
    type: path
    required: true
  files:
    description: The files to write, in order.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: A path relative to the job directory; nothing may lead out of it.
        type: str
        required: true
      content:
        description: The file's text.
        type: str
        required: true
      mode:
        description: Its mode, in octal.
        type: str
        default: "0640"
      check:
        description: C(bash) to require C(bash -n) to pass first.
        type: str
        choices: [bash, none]
        default: none
  start:
    description: >-
      The file (one of C(files)) to start; it must write its pid to C(pid). Empty: write the
      files only (a job Slurm starts with srun).
    type: str
    required: true
  pid_timeout:
    description: Seconds to wait for the pid.
    type: float
    default: 30
  attempt:
    description: >-
      The job's attempt. Attempt 1 refuses a directory that already holds a started job;
      a later attempt first moves the previous one's outcome (pid, exit codes, progress)
      into C(attempts/<n>/).
    type: int
    default: 1
"""

RETURN = r"""
ansible_facts:
  description: C(ugro_launch_pid), the supervisor's pid (not set in check mode).
  returned: success
  type: dict
checked:
  description: In check mode, the files that were checked.
  returned: check mode
  type: list
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "job_dir": {"type": "path", "required": True},
            "files": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "name": {"type": "str", "required": True},
                    "content": {"type": "str", "required": True},
                    "mode": {"type": "str", "default": "0640"},
                    "check": {"type": "str", "choices": ["bash", "none"], "default": "none"},
                },
            },
            "start": {"type": "str", "required": True},
            "pid_timeout": {"type": "float", "default": 30.0},
            "attempt": {"type": "int", "default": 1},
        },
        supports_check_mode=True,  # in check mode it only checks the scripts
    )
    request = dict(module.params, check_mode=module.check_mode)
    # The files' contents (the job's code) would otherwise be echoed into every event and run
    # artifact: the invocation names them instead.
    invocation = {
        "module_args": {
            **{k: v for k, v in module.params.items() if k != "files"},
            "files": [entry["name"] for entry in module.params["files"]],
        }
    }
    result, error = run(request)
    if error:
        module.fail_json(msg=error, invocation=invocation)
    if module.check_mode:
        module.exit_json(changed=False, checked=result["checked"], invocation=invocation)
    facts = {} if result["pid"] is None else {"ugro_launch_pid": result["pid"]}
    module.exit_json(changed=True, ansible_facts=facts, invocation=invocation)


if __name__ == "__main__":
    main()
