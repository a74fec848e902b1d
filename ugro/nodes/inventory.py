"""The Ansible inventory, as a pure function of the resolved Cluster.

Groups: `master` (rank 0), `workers` (ranks 1..N-1) and `nodes` (both). Every value a role needs
is a host variable, so `ansible-inventory --list` shows exactly what a play sees. Two consumers:
`ugro.runner` hands the YAML-inventory form to ansible-runner, and the `ugro_cluster` inventory
plugin (ugro/ansible_plugins/inventory) builds the same for a plain `ansible-playbook` run.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import asdict
from typing import Any

from ugro.core.cluster import Cluster, Node
from ugro.core.layout import layout_vars
from ugro.nodes.ssh import known_hosts_option, ssh_command

GROUPS = ("master", "workers")
ALL_NODES_GROUP = "nodes"


def group_of(node: Node) -> str:
    return "master" if node.role == "master" else "workers"


def host_vars(cluster: Cluster, node: Node) -> dict[str, Any]:
    launch = cluster.launch
    variables: dict[str, Any] = {
        "ansible_host": node.address,
        "ansible_user": node.user,
        "ansible_connection": node.connection,
        "ugro_cluster_name": cluster.name,
        "ugro_node_name": node.name,
        "ugro_hostname": node.hostname,
        "ugro_address": node.address,
        "ugro_role": node.role,
        "ugro_rank": node.rank,
        "ugro_accelerator": node.accelerator,
        "ugro_home": node.home,
        "ugro_project_path": node.project_path,
        "ugro_scripts_path": node.scripts_path,
        "ugro_experiments_path": node.experiments_path,
        "ugro_job_layout": layout_vars(),
        "ugro_python": node.python,
        "ugro_hardware": dict(node.hardware),
        "ugro_master_addr": cluster.master.address,
        "ugro_master_port": launch.master_port,
        "ugro_rdzv_backend": launch.rdzv_backend,
        "ugro_max_restarts": launch.max_restarts,
        "ugro_nnodes": len(cluster.nodes),
        "ugro_dist_timeout_seconds": launch.timeout_seconds,
        "ugro_telemetry_interval": launch.telemetry_interval_s,
        "ugro_training_defaults": (
            str(cluster.paths.config / "training_defaults.yaml") if cluster.paths.config else ""
        ),
        **environment_vars(cluster, node),
        # cluster.yaml's slurm section with its defaults (roles/ugro_slurm).
        "ugro_slurm": asdict(cluster.slurm),
    }
    if node.nproc_per_node is not None:
        variables["ugro_nproc_per_node"] = node.nproc_per_node
    if node.micro_batch_size is not None:
        variables["ugro_micro_batch_size"] = node.micro_batch_size
    if node.connection == "local":
        # The controller's own interpreter. Not "{{ ansible_playbook_python }}": Ansible treats
        # inventory strings as untrusted and never templates them (nor should it: they come
        # from cluster.yaml).
        variables["ansible_python_interpreter"] = sys.executable
    else:
        variables["ansible_port"] = node.port
        variables["ansible_python_interpreter"] = cluster.ssh.python_interpreter
        variables["ansible_ssh_timeout"] = cluster.ssh.connect_timeout
        if cluster.ssh.identity_file:
            variables["ansible_ssh_private_key_file"] = cluster.ssh.identity_file
        # Host-key checking stays on; a cluster may bring its own known_hosts (the sandbox does).
        # Ansible splits these arguments as a shell would: each is quoted, so a path with a
        # space stays one argument.
        ssh_args = ["-o", "StrictHostKeyChecking=yes"]
        if cluster.ssh.known_hosts:
            ssh_args += ["-o", known_hosts_option(cluster.ssh.known_hosts)]
        variables["ansible_ssh_common_args"] = shlex.join(ssh_args)
    variables.update(rsync_vars(cluster, node))
    return variables


def rsync_vars(cluster: Cluster, node: Node) -> dict[str, str]:
    """How rsync on the master reaches this node: the same key, port and known_hosts as Ansible.

    `ugro_rsync_prefix` goes before a path on the node (`user@address:`, or nothing for a node
    reached locally); `ugro_rsync_rsh` is rsync's --rsh, which rsync splits itself (quotes
    allowed, no shell involved).
    """
    if node.connection == "local":
        return {"ugro_rsync_prefix": "", "ugro_rsync_rsh": ""}
    rsh = ssh_command(cluster, node)
    host = f"[{node.address}]" if ":" in node.address else node.address
    return {"ugro_rsync_prefix": f"{node.user}@{host}:", "ugro_rsync_rsh": shlex.join(rsh)}


def environment_vars(cluster: Cluster, node: Node) -> dict[str, Any]:
    """What the sync role needs to build this node's environment, and where its lock lives."""
    env = cluster.environment
    lock = {
        "pixi": f"{node.project_path}/pixi.lock",
        "venv": f"{node.project_path}/requirements.txt",
    }
    pixi = env.pixi.replace("~", node.home, 1) if env.pixi.startswith("~") else env.pixi
    return {
        "ugro_env_manager": env.manager,
        "ugro_env_expected": dict(env.expected_versions),
        "ugro_env_lock_file": lock.get(env.manager, ""),
        "ugro_env_name": env.conda_env,
        "ugro_env_venv": node.python.removesuffix("/bin/python") if env.manager == "venv" else "",
        "ugro_env_base_python": env.base_python,
        "ugro_env_pixi": pixi,
        "ugro_env_wheelhouse": env.wheelhouse or "",
        "ugro_env_source": env.source or "",
    }


def build_inventory(cluster: Cluster) -> dict[str, Any]:
    """The inventory in Ansible's YAML-inventory form (what ansible-runner accepts as a dict)."""
    children: dict[str, Any] = {group: {"hosts": {}} for group in GROUPS}
    for node in cluster.nodes:
        children[group_of(node)]["hosts"][node.name] = host_vars(cluster, node)
    return {"all": {"children": {ALL_NODES_GROUP: {"children": children}}}}


def inventory_list(cluster: Cluster) -> dict[str, Any]:
    """The same inventory in the shape `ansible-inventory --list` prints."""
    listing: dict[str, Any] = {
        "_meta": {"hostvars": {n.name: host_vars(cluster, n) for n in cluster.nodes}},
        "all": {"children": ["ungrouped", ALL_NODES_GROUP]},
        ALL_NODES_GROUP: {"children": list(GROUPS)},
    }
    for group in GROUPS:
        hosts = [n.name for n in cluster.nodes if group_of(n) == group]
        if hosts:
            listing[group] = {"hosts": hosts}
    return listing
