"""`ugro node add|list|remove|rekey`: the cluster's machines, enrolled with their host keys
checked once by a person (or against a fingerprint given) and never trusted blindly after.

Adding a node writes nothing until every step has passed: its host key goes into a
known_hosts beside the real one until then, and cluster.yaml and known_hosts are put back as
they were if its sync or health check fails.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from filelock import FileLock

from ugro.commands.context import Context
from ugro.config import edit
from ugro.config.source import locate_config
from ugro.core.cluster import Cluster
from ugro.core.errors import ConfigError, ExitCode, UgroError, UsageError
from ugro.enrol import facts, identity, remote, trust
from ugro.nodes import hostkeys
from ugro.records.deployments import serving_nodes
from ugro.records.history import Jobs

_NEXT_STEPS = "`ugro init` writes one for this machine; or pass --config"


# --- add ----------------------------------------------------------------------------------------


def add(
    ctx: Context,
    *,
    name: str,
    address: str,
    user: str,
    port: int,
    fingerprint: str | None,
) -> ExitCode:
    path = _cluster_file(ctx)
    _check_fields(name=name, address=address, user=user)
    with _locked(path):
        cluster = ctx.cluster()
        _check_new(cluster, name, address, port)
        known_hosts = hostkeys.known_hosts_of(cluster)
        key = trust.confirmed_key(name, address, port, known_hosts, fingerprint)
        private, public = identity.public_key_of(cluster)
        with trust.trial_known_hosts(known_hosts, address, port, key) as trial:
            target = remote.Target(name, address, port, user, trial, cluster.ssh.connect_timeout)
            _log_in(target, private, public)
            found = _ready(target, private, cluster)
            worker = _worker_entry(cluster, name, address, user, port, found)
            known_text = trial.read_text(encoding="utf-8")
        old_config = path.read_bytes()
        old_known = known_hosts.read_bytes() if known_hosts.exists() else None
        edit.replace_checked(path, edit.add_worker(old_config.decode("utf-8"), worker))
        hostkeys.write_private(known_hosts, known_text)
        try:
            _bring_up(path, ctx.verbose, name)
        except BaseException:
            _restore(path, old_config, known_hosts, old_known)
            raise
    click.echo(f"Added {name} (rank {worker['rank']}) to {path}.")
    _print_rows(Context(str(path), ctx.verbose), [name])
    return ExitCode.OK


def _log_in(target: remote.Target, private: Path, public: str) -> None:
    """UGRO's key logs in to the node: it did already, or it is installed now with the password
    the user types into ssh."""
    if remote.key_logs_in(target, private):
        return
    who = f"{target.user}@{target.address}"
    click.echo(
        f"Installing UGRO's key for {who}: type {target.user}'s password when ssh asks for it "
        "(UGRO never sees it).",
        err=True,
    )
    failed = remote.install_key(target, public)
    if failed:
        raise UsageError(
            f"{target.name}: could not log in as {target.user} with a password ({failed}); "
            "nothing was written"
        )
    if not remote.key_logs_in(target, private):
        raise UsageError(
            f"{target.name}: UGRO's key was installed for {target.user} but does not log in "
            "(sshd's AuthorizedKeysFile, or the permissions of ~/.ssh?); nothing was written"
        )


def _ready(target: remote.Target, private: Path, cluster: Cluster) -> facts.Facts:
    """What the node has, once it has everything a node needs; else each shortfall, refused."""
    found = remote.probe(target, private)
    if isinstance(found, str):
        raise UsageError(f"{target.name}: could not be asked what it has ({found})")
    shortfalls = facts.problems(
        found,
        name=target.name,
        manager=cluster.environment.manager,
        disk_min_free_gb=cluster.daemon.disk_min_free_gb,
    )
    if shortfalls:
        raise UsageError("; ".join(shortfalls) + "; then run this again (nothing was written)")
    return found


def _bring_up(path: Path, verbose: int, name: str) -> None:
    """The new node synced and healthy, or the reason it is not (raised)."""
    # The verbs that follow an enrolment (Ansible's runner, rich), loaded only when one does.
    from ugro.commands.health import health
    from ugro.commands.sync import sync

    fresh = Context(str(path), verbose)
    sync(fresh, nodes=(name,))
    if health(fresh, nodes=(name,), now=True) != ExitCode.OK:
        raise UgroError(f"{name} is not healthy (above); it was not added: fix it and run again")


def _restore(path: Path, config: bytes, known_hosts: Path, known: bytes | None) -> None:
    path.write_bytes(config)
    if known is None:
        known_hosts.unlink(missing_ok=True)
    else:
        hostkeys.write_private(known_hosts, known.decode("utf-8"))


def _worker_entry(
    cluster: Cluster, name: str, address: str, user: str, port: int, found: facts.Facts
) -> dict[str, Any]:
    hostname = found.hostname.split(".")[0] if found.hostname else name
    entry: dict[str, Any] = {
        "name": name,
        "hostname": hostname if _valid_hostname(hostname) else name,
        "ip": address,
        "user": user,
        "ssh_port": port,
        "rank": len(cluster.nodes),  # ranks are 0..N-1: the next free one is N
        "accelerator": found.accelerator,
        "hardware": found.hardware(),
    }
    if found.home and found.home != f"/home/{user}":
        entry["paths"] = {"home": found.home}
    return entry


# --- list ---------------------------------------------------------------------------------------


def list_nodes(ctx: Context, *, as_json: bool) -> ExitCode:
    cluster = ctx.cluster()
    rows = _rows(cluster, cluster.node_names)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return ExitCode.OK
    _print_table(rows)
    return ExitCode.OK


def _print_rows(ctx: Context, names: list[str]) -> None:
    _print_table(_rows(ctx.cluster(), names))


def _rows(cluster: Cluster, names: list[str]) -> list[dict[str, Any]]:
    known_hosts = hostkeys.known_hosts_of(cluster)
    uses = _uses(cluster)
    rows = []
    for name in names:
        node = cluster.node(name)
        keys = (
            []
            if node.connection == "local"
            else hostkeys.known_keys(known_hosts, node.address, node.port)
        )
        rows.append(
            {
                "name": node.name,
                "role": node.role,
                "rank": node.rank,
                "address": node.address,
                "port": node.port,
                "user": node.user,
                "accelerator": node.accelerator,
                "gpus": node.hardware.get("gpu_count"),
                "host_key": keys[0].fingerprint
                if keys
                else ("local" if node.connection == "local" else "unknown"),
                "used_by": uses.get(node.name, []),
            }
        )
    return rows


def _print_table(rows: list[dict[str, Any]]) -> None:
    # rich, only to draw for a person (`--json` goes without it).
    from rich.table import Table

    from ugro.display.console import console

    table = Table(title="Nodes")
    for column in ("name", "rank", "address", "user", "accelerator", "host key", "in use"):
        table.add_column(column)
    for row in rows:
        address = row["address"] + (f":{row['port']}" if row["port"] != 22 else "")
        table.add_row(
            row["name"],
            str(row["rank"]),
            address,
            row["user"],
            row["accelerator"],
            row["host_key"],
            ", ".join(row["used_by"]) or "-",
        )
    console.print(table)


# --- remove -------------------------------------------------------------------------------------


def remove(ctx: Context, *, name: str) -> ExitCode:
    path = _cluster_file(ctx)
    with _locked(path):
        cluster = ctx.cluster()
        node = cluster.node(name)
        if node.role == "master":
            raise UsageError(f"{name} is the master: a cluster keeps its master")
        uses = _uses(cluster).get(node.name)
        if uses:
            raise UsageError(
                f"{name} {'; '.join(uses)}: remove it once that is over "
                "(`ugro stop`, `ugro cancel`, `ugro serve down`)"
            )
        known_hosts = hostkeys.known_hosts_of(cluster)
        text = edit.remove_worker(path.read_text(encoding="utf-8"), node.name)
        edit.replace_checked(path, text)
        if known_hosts.exists():
            hostkeys.write_private(
                known_hosts, hostkeys.with_key(known_hosts, node.address, node.port, None)
            )
    click.echo(f"Removed {name} from {path} and its host key from {known_hosts}.")
    return ExitCode.OK


def _uses(cluster: Cluster) -> dict[str, list[str]]:
    """{node: what uses it}: a running or queued job, a deployment."""
    uses: dict[str, list[str]] = {}
    jobs = Jobs(cluster)
    for record in jobs.records().values():
        if not (record.active or record.queued):
            continue
        try:
            names = jobs.nodes(record) or cluster.node_names
        except (OSError, KeyError, TypeError, ValueError, UgroError):
            names = cluster.node_names
        verb = "runs" if record.active else "is queued for"
        for node in names:
            uses.setdefault(node, []).append(f"{verb} {record.job_id}")
    for node, deployments in serving_nodes(cluster).items():
        uses.setdefault(node, []).append(f"serves {', '.join(deployments)}")
    return uses


# --- rekey --------------------------------------------------------------------------------------


def rekey(ctx: Context, *, name: str, fingerprint: str | None) -> ExitCode:
    path = _cluster_file(ctx)
    with _locked(path):
        cluster = ctx.cluster()
        node = cluster.node(name)
        if node.connection == "local":
            raise UsageError(f"{name} is reached without SSH: it has no host key to check")
        known_hosts = hostkeys.known_hosts_of(cluster)
        old = hostkeys.known_keys(known_hosts, node.address, node.port)
        offered = trust.scan(name, node.address, node.port)
        if old and old[0] in offered:
            click.echo(f"{name}'s host key is unchanged ({old[0].fingerprint}).")
            return ExitCode.OK
        if old:
            click.echo(f"{name} ({node.address}) was known by host key {old[0].fingerprint}.")
        key = trust.confirm(name, node.address, offered, fingerprint)
        hostkeys.write_private(
            known_hosts, hostkeys.with_key(known_hosts, node.address, node.port, key)
        )
    click.echo(f"{name}'s host key is now {key.fingerprint} in {known_hosts}.")
    return ExitCode.OK


# --- shared -------------------------------------------------------------------------------------


def _cluster_file(ctx: Context) -> Path:
    path = locate_config(ctx.config_path)
    if path is None:
        raise ConfigError(f"no cluster.yaml to add nodes to: {_NEXT_STEPS}")
    return path


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One enrolment at a time per cluster.yaml (the lock beside it)."""
    with FileLock(str(path.with_name(f".{path.name}.lock")), timeout=600):
        yield


def _check_fields(*, name: str, address: str, user: str) -> None:
    """Each value as cluster.yaml's schema holds it, refused with the option it came from."""
    # pydantic and the schema, for the commands that check a node's fields only.
    from pydantic import TypeAdapter, ValidationError

    from ugro.config.schema import Address, NodeName, UserName

    for option, kind, value in (
        ("NAME", NodeName, name),
        ("--ip", Address, address),
        ("--user", UserName, user),
    ):
        try:
            TypeAdapter(kind).validate_python(value)
        except ValidationError as exc:
            reason = str(exc.errors()[0].get("msg", "invalid")).removeprefix("Value error, ")
            raise UsageError(f"{option} {value!r}: {reason}") from None


def _valid_hostname(text: str) -> bool:
    # pydantic and the schema, for the commands that check a node's fields only.
    from pydantic import TypeAdapter, ValidationError

    from ugro.config.schema import HostName

    try:
        TypeAdapter(HostName).validate_python(text)
        return True
    except ValidationError:
        return False


def _check_new(cluster: Cluster, name: str, address: str, port: int) -> None:
    if name in cluster.node_names:
        raise UsageError(f"{name} is already a node of this cluster (`ugro node list`)")
    for node in cluster.nodes:
        if node.address == address and node.port == port and node.connection != "local":
            raise UsageError(f"{address}:{port} is already {node.name}'s address")
