"""How ugro reaches a node by SSH: ssh's argv with the key, port, connect timeout and
known_hosts Ansible uses, host-key checking always on, never a password prompt; and a command
run on a node, as it is on the master (reached locally) or through ssh.

No shell string is built from input: the remote command is an argv joined with shlex.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from ugro.core.cluster import Cluster, Node


def known_hosts_option(path: str) -> str:
    """ssh's option for a known_hosts file. ssh reads UserKnownHostsFile as a list of files
    separated by spaces, so the path is double-quoted (the schema refuses a '"' in it)."""
    return f'UserKnownHostsFile="{path}"'


def ssh_command(cluster: Cluster, node: Node) -> list[str]:
    """ssh's argv up to (not including) the destination: the key, port, connect timeout and
    known_hosts Ansible uses, host-key checking on, never a password prompt."""
    command = [
        "ssh",
        "-p",
        str(node.port),
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={cluster.ssh.connect_timeout}",
        "-o",
        "StrictHostKeyChecking=yes",
    ]
    if cluster.ssh.known_hosts:
        command += ["-o", known_hosts_option(cluster.ssh.known_hosts)]
    if cluster.ssh.identity_file:
        command += ["-i", cluster.ssh.identity_file]
    return command


def ssh_destination(node: Node) -> str:
    return f"{node.user}@{node.address}"


def on_node(
    cluster: Cluster, node: Node, remote: Sequence[str], *, options: Sequence[str] = ()
) -> list[str]:
    """`remote` run on the node: as it is on the master, else through ssh (with `options`)."""
    if node.connection == "local":
        return list(remote)
    return [*ssh_command(cluster, node), *options, ssh_destination(node), "--", shlex.join(remote)]
