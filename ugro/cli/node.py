"""`ugro init` and `ugro node add|list|remove|rekey`: from bare machines to a cluster."""

from __future__ import annotations

import click

from ugro.cli.options import json_option, pass_context
from ugro.commands.context import Context

fingerprint_option = click.option(
    "--fingerprint",
    metavar="SHA256:...",
    help="The host key's fingerprint as read on the node's console: compared, not asked "
    "(needed off a terminal).",
)


@click.command(name="init")
@click.option("--name", "cluster_name", metavar="CLUSTER", help="The cluster's name.")
@click.option(
    "--ip", "address", metavar="ADDRESS", help="This machine's LAN address (default: probed)."
)
@click.option(
    "--force", is_flag=True, help="Replace an existing cluster.yaml (kept as cluster.yaml.bak)."
)
@pass_context
def init_command(ctx: Context, cluster_name: str | None, address: str | None, force: bool) -> int:
    """Write cluster.yaml for this machine alone, and UGRO's own SSH key and known_hosts.

    It goes to --config, else $UGRO_CONFIG, else ~/.config/ugro/cluster.yaml; the key pair and
    known_hosts (mode 0600) to ~/.config/ugro. Then `ugro node add` each other machine.
    """
    from ugro.commands.init import init

    return init(ctx, name=cluster_name, address=address, force=force)


@click.group()
def node() -> None:
    """The cluster's machines: add, list, remove, rekey."""


@node.command(name="add")
@click.argument("name")
@click.option("--ip", "address", required=True, metavar="ADDRESS", help="The node's address.")
@click.option("--user", required=True, help="The user UGRO logs in as on the node.")
@click.option("--port", default=22, show_default=True, type=click.IntRange(1, 65535))
@fingerprint_option
@pass_context
def node_add(
    ctx: Context, name: str, address: str, user: str, port: int, fingerprint: str | None
) -> int:
    """Enrol a machine: check its host key (you confirm the fingerprint), install UGRO's key
    with the user's password (typed into ssh, never stored), check what it needs, add it to
    cluster.yaml with the next rank, then sync it and check its health.

    A failure at any step leaves cluster.yaml and known_hosts as they were.
    """
    from ugro.commands.node import add

    return add(ctx, name=name, address=address, user=user, port=port, fingerprint=fingerprint)


@node.command(name="list")
@json_option
@pass_context
def node_list(ctx: Context, as_json: bool) -> int:
    """Every node: its rank, address, user, host key and what uses it."""
    from ugro.commands.node import list_nodes

    return list_nodes(ctx, as_json=as_json)


@node.command(name="remove")
@click.argument("name")
@pass_context
def node_remove(ctx: Context, name: str) -> int:
    """Take a node out of cluster.yaml and its host key out of known_hosts (refused while a
    job, a queued job or a deployment uses it). The ranks after it move down by one."""
    from ugro.commands.node import remove

    return remove(ctx, name=name)


@node.command(name="rekey")
@click.argument("name")
@fingerprint_option
@pass_context
def node_rekey(ctx: Context, name: str, fingerprint: str | None) -> int:
    """A node reinstalled: show its old and new host key, and keep the new one once you
    confirm it (or it matches --fingerprint)."""
    from ugro.commands.node import rekey

    return rekey(ctx, name=name, fingerprint=fingerprint)
