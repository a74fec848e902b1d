"""`ugro init`: a cluster.yaml for this machine alone, and UGRO's own key pair and known_hosts;
then what to run next."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from datetime import datetime
from pathlib import Path

import click
import yaml

from ugro.commands.context import Context
from ugro.config import edit
from ugro.config.source import CONFIG_ENV, current_user, locate_config
from ugro.core.errors import ExitCode, UsageError
from ugro.enrol import identity, remote

# Documentation's own address block (RFC 5737): connecting a UDP socket to it sends nothing,
# and tells which of this machine's addresses its default route would use.
_ROUTE_PROBE = "192.0.2.1"
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def target_path(ctx: Context) -> Path:
    """Where init writes: --config, else $UGRO_CONFIG, else UGRO's config directory."""
    named = ctx.config_path or os.environ.get(CONFIG_ENV)
    return Path(named).expanduser() if named else identity.config_dir() / "cluster.yaml"


def init(ctx: Context, *, name: str | None, address: str | None, force: bool) -> ExitCode:
    path = target_path(ctx)
    if path.exists() and not force:
        raise UsageError(
            f"{path} exists; `ugro init --force` replaces it (keeping it as {path.name}.bak)"
        )
    if address is not None:
        address = _checked_address(address)
    facts = remote.probe_here()
    host = _host_name(facts.hostname or socket.gethostname())
    ip = address or _lan_address()
    directory = identity.config_dir()
    key = directory / identity.KEY_NAME
    known_hosts = directory / identity.KNOWN_HOSTS_NAME
    made_key = identity.ensure_key_pair(key, f"ugro@{host}")
    identity.ensure_known_hosts(known_hosts)
    manager = "pixi" if facts.pixi else "venv"
    described = {
        "cluster": {
            "name": name or f"{host} cluster",
            "master": {
                "name": host,
                "hostname": host,
                "ip": ip,
                "user": current_user(),
                "connection": "local",
                "accelerator": facts.accelerator,
                "hardware": facts.hardware(),
            },
        },
        "workers": [],
        "environment": {"manager": manager},
        "ssh": {"identity_file": str(key), "known_hosts": str(known_hosts), "connect_timeout": 5},
    }
    header = (
        f"# Written by `ugro init` on {host}, {datetime.now():%Y-%m-%d %H:%M}.\n"
        "# Add each machine with: ugro node add NAME --ip ADDRESS --user USER\n"
        f"# environment.manager: {manager} ("
        + (f"pixi found at {facts.pixi}" if facts.pixi else "no pixi here: ugro sync makes a venv")
        + ")\n"
    )
    edit.replace_checked(
        path, header + yaml.safe_dump(described, sort_keys=False, width=4096), backup=force
    )
    click.echo(f"Wrote {path}: {host} ({ip}, {facts.accelerator}) alone.")
    click.echo(
        f"UGRO's SSH key: {key}"
        + (" (made now)" if made_key else " (already there)")
        + f"; its known_hosts: {known_hosts}"
    )
    if ip.startswith("127."):
        click.echo(
            "No LAN address found: other machines cannot reach this one at "
            f"{ip}; `ugro init --force --ip ADDRESS` sets it",
            err=True,
        )
    # Plain `ugro` finds this file unless another comes first (./config/cluster.yaml).
    where = "" if locate_config() == path.resolve() else f" --config {path}"
    click.echo("Next:")
    click.echo(f"  ugro{where} node add gpu1 --ip ADDRESS --user USER   (each machine, once)")
    click.echo(f"  ugro{where} health")
    click.echo(f"  ugro{where} launch --name exp1")
    return ExitCode.OK


def _checked_address(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise UsageError(f"--ip {address!r}: expected this machine's IP address") from None


def _host_name(raw: str) -> str:
    """This machine's short name, as a node name and a host name allow it."""
    short = raw.split(".")[0]
    return short if _LABEL.fullmatch(short) else "master"


def _lan_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((_ROUTE_PROBE, 9))  # UDP: chooses a route, sends no packet
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"
