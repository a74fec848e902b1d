#!/usr/bin/python
"""Ansible module: probe this node (module_utils/ugro_probe.py) and set `ugro_health_report`."""

from __future__ import annotations

import argparse

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.ugro_probe import probe

DOCUMENTATION = r"""
module: ugro_health_probe
short_description: Probe a node for UGRO (system, GPUs, the training environment's torch)
description:
  - Runs the UGRO probe on the node and returns its report as the fact C(ugro_health_report).
  - Fails the host when the report lists problems; the report is returned either way.
options:
  python:
    description: The node's training interpreter, whose torch is checked.
    type: str
    required: true
  accelerator:
    description: What the node must offer; C(auto) means CUDA when nvidia-smi lists a GPU.
    type: str
    choices: [cuda, cpu, auto]
    default: auto
  project_path:
    description: The node's project directory; free disk is measured there.
    type: str
    required: true
  nvidia_smi:
    description: The nvidia-smi command.
    type: str
    default: nvidia-smi
  min_free_disk_gb:
    description: Less free disk than this at the project path is a problem.
    type: float
    default: 1.0
  torch_timeout:
    description: Seconds allowed for importing torch.
    type: float
    default: 90
  torch_cache_dir:
    description: Where torch's facts are cached; empty for $XDG_CACHE_HOME/ugro or ~/.cache/ugro.
    type: str
    default: ""
  torch_cache_ttl:
    description: Seconds a cached entry may be reused while nothing changed; 0 for none.
    type: float
    default: 3600
  deep:
    description: Import torch even when its facts are cached.
    type: bool
    default: false
  address:
    description: The node's cluster address; the interface holding it is reported.
    type: str
    default: ""
  port_from:
    description: When not 0, report the first free TCP port from here up at the address.
    type: int
    default: 0
  lock_file:
    description: The environment's lock file, hashed into the fingerprint.
    type: str
    default: ""
"""

RETURN = r"""
ansible_facts:
  description: C(ugro_health_report), the probe's report (see module_utils/ugro_probe.py).
  returned: always
  type: dict
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "python": {"type": "str", "required": True},
            "accelerator": {"type": "str", "choices": ["cuda", "cpu", "auto"], "default": "auto"},
            "project_path": {"type": "str", "required": True},
            "nvidia_smi": {"type": "str", "default": "nvidia-smi"},
            "min_free_disk_gb": {"type": "float", "default": 1.0},
            "torch_timeout": {"type": "float", "default": 90.0},
            "torch_cache_dir": {"type": "str", "default": ""},
            "torch_cache_ttl": {"type": "float", "default": 3600.0},
            "deep": {"type": "bool", "default": False},
            "address": {"type": "str", "default": ""},
            "port_from": {"type": "int", "default": 0},
            "lock_file": {"type": "str", "default": ""},
        },
        supports_check_mode=True,  # it only reads (and refreshes its own cache)
    )
    report = probe(argparse.Namespace(**module.params))
    result = {"changed": False, "ansible_facts": {"ugro_health_report": report}}
    if not report["healthy"]:
        module.fail_json(msg="unhealthy: " + "; ".join(report["problems"]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
