"""Trusting a node's host key once: fetched (ssh-keyscan), shown with the command that reads
the same fingerprint on the node's own console, and confirmed by a person at a terminal or
compared with a fingerprint given; never accepted silently. Until the node is enrolled, the key
lives in a known_hosts of its own beside the real one (`trial_known_hosts`).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from ugro.core.errors import UsageError
from ugro.nodes import hostkeys


def scan(name: str, address: str, port: int) -> list[hostkeys.HostKey]:
    """The node's host keys, best first; refused where nothing answers."""
    offered = hostkeys.scan(address, port)
    if not offered:
        raise UsageError(
            f"{name}: no SSH host key from {address} port {port} (no answer within 5 s): is "
            "the address right, the machine on and sshd running?"
        )
    return offered


def confirmed_key(
    name: str,
    address: str,
    port: int,
    known_hosts: Path,
    fingerprint: str | None,
) -> hostkeys.HostKey:
    """The key to enrol a node with: the one known_hosts already holds for its address (checked
    before), else one confirmed now; a known address offering another key is refused."""
    offered = scan(name, address, port)
    known = hostkeys.known_keys(known_hosts, address, port)
    if known:
        if known[0] in offered:
            return known[0]  # checked before (a node removed and added again)
        raise UsageError(
            f"{address} is known by host key {known[0].fingerprint} but now offers "
            f"{offered[0].fingerprint}: refused; if the machine was reinstalled, remove its "
            f"line from {known_hosts} after checking"
        )
    return confirm(name, address, offered, fingerprint)


def confirm(
    name: str, address: str, offered: list[hostkeys.HostKey], fingerprint: str | None
) -> hostkeys.HostKey:
    """The key a person confirmed, or that matches --fingerprint; refused otherwise."""
    key = offered[0]
    click.echo(f"{name} ({address}) offers host key {key.key_type} {key.fingerprint}")
    if fingerprint is not None:
        match = next((k for k in offered if k.fingerprint == fingerprint.strip()), None)
        if match is None:
            raise UsageError(
                f"--fingerprint {fingerprint} does not match {name}'s host key "
                f"{key.fingerprint}: nothing was written"
            )
        return match
    if not sys.stdin.isatty():
        raise UsageError(
            f"no terminal to confirm {name}'s host key {key.fingerprint}: check it on {name}'s "
            f"console (`{key.console_command()}`) and pass --fingerprint"
        )
    click.echo(f"On {name}'s own console, `{key.console_command()}` shows its fingerprint.")
    if not click.confirm("Is it the same?", default=False):
        raise UsageError(f"{name}'s host key was not confirmed: nothing was written")
    return key


@contextmanager
def trial_known_hosts(
    known_hosts: Path, address: str, port: int, key: hostkeys.HostKey
) -> Iterator[Path]:
    """known_hosts with the new key, in a file of its own until the node is added."""
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=known_hosts.parent, prefix=".enrol.") as scratch:
        trial = Path(scratch) / "known_hosts"
        hostkeys.write_private(trial, hostkeys.with_key(known_hosts, address, port, key))
        yield trial
