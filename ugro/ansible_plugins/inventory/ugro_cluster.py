"""Inventory plugin: the cluster described by cluster.yaml, read fresh on every run.

This is what makes a plain `ansible-playbook playbooks/health.yml` from the repository root use
the cluster.yaml the user just edited: nothing is generated ahead of time, so nothing goes stale.
The cluster comes through ugro.config.load_cluster, whose cache is keyed by the file's content
(and all else the result depends on), so an unchanged file skips pydantic in every Ansible run;
the host variables are ugro.inventory's, the same the CLI hands to ansible-runner.
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


class InventoryModule(BaseInventoryPlugin):  # type: ignore[misc]  # Ansible ships no types
    NAME = "ugro_cluster"

    def verify_file(self, path: str) -> bool:
        return super().verify_file(path) and path.endswith(("ugro.yml", "ugro.yaml"))

    def parse(self, inventory, loader, path, cache=True):  # type: ignore[no-untyped-def]
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        try:
            from ugro.config import load_cluster
            from ugro.core.errors import UgroError
            from ugro.nodes.inventory import ALL_NODES_GROUP, GROUPS, group_of, host_vars
        except ImportError as exc:
            raise AnsibleParserError(
                f"the ugro_cluster inventory needs the ugro package in Ansible's Python: {exc}"
            ) from exc
        named = self.get_option("config")
        if named:
            named = str(Path(path).parent / named)
        try:
            cluster = load_cluster(named)
        except UgroError as exc:
            raise AnsibleParserError(exc.message) from None
        self.inventory.add_group(ALL_NODES_GROUP)
        for group in GROUPS:
            self.inventory.add_group(group)
            self.inventory.add_child(ALL_NODES_GROUP, group)
        for node in cluster.nodes:
            self.inventory.add_host(node.name, group=group_of(node))
            for key, value in host_vars(cluster, node).items():
                self.inventory.set_variable(node.name, key, value)
