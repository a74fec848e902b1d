"""Inventory plugin: the cluster described by cluster.yaml, read fresh on every run.

This is what makes a plain `ansible-playbook playbooks/health.yml` from the repository root use
the cluster.yaml the user just edited: nothing is generated ahead of time, so nothing goes stale.
The resolved hosts come through ugro.resolved, whose cache is keyed by the file's content (and
all else the result depends on), so an unchanged file skips pydantic in every Ansible run.
"""

from __future__ import annotations

from pathlib import Path

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin

DOCUMENTATION = r"""
name: ugro_cluster
short_description: The UGRO cluster described by cluster.yaml
description:
  - Builds groups C(master), C(workers) and C(nodes) with UGRO's host variables from a cluster.yaml.
  - With no C(config), the file is found as the ugro CLI finds it (UGRO_CONFIG,
    ./config/cluster.yaml, ~/.config/ugro/cluster.yaml), falling back to the built-in local cluster.
options:
  plugin:
    description: The name of this plugin.
    required: true
    choices: ["ugro_cluster"]
  config:
    description: Path to cluster.yaml, relative to this inventory file.
    type: path
    required: false
"""


class InventoryModule(BaseInventoryPlugin):
    NAME = "ugro_cluster"

    def verify_file(self, path: str) -> bool:
        return super().verify_file(path) and path.endswith(("ugro.yml", "ugro.yaml"))

    def parse(self, inventory, loader, path, cache=True):  # type: ignore[no-untyped-def]
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        try:
            from ugro import resolved
            from ugro.errors import UgroError
            from ugro.inventory import ALL_NODES_GROUP, GROUPS
        except ImportError as exc:
            raise AnsibleParserError(
                f"the ugro_cluster inventory needs the ugro package in Ansible's Python: {exc}"
            ) from exc
        named = self.get_option("config")
        if named:
            named = str(Path(path).parent / named)
        try:
            cluster = resolved.load(named)
        except UgroError as exc:
            raise AnsibleParserError(exc.message) from None
        self.inventory.add_group(ALL_NODES_GROUP)
        for group in GROUPS:
            self.inventory.add_group(group)
            self.inventory.add_child(ALL_NODES_GROUP, group)
        for name, group, variables in cluster.hosts:
            self.inventory.add_host(name, group=group)
            for key, value in variables.items():
                self.inventory.set_variable(name, key, value)
