"""Reaching a node that is being enrolled: ssh with host-key checking on (against the
known_hosts being built), UGRO's key tried first, and the node user's password typed into ssh
itself when the key is not installed yet. The password is never seen by UGRO: ssh reads it
from the terminal (or from $SSH_ASKPASS, where a person set one up).

Every remote command here is a constant of this module; nothing from the command line reaches
a remote shell.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ugro.enrol import facts
from ugro.nodes.ssh import known_hosts_option

# Appends the public key read from stdin to authorized_keys unless it is there already.
_INSTALL_KEY = (
    'umask 077; mkdir -p "$HOME/.ssh"; key=$(cat); '
    'grep -qxF "$key" "$HOME/.ssh/authorized_keys" 2>/dev/null '
    '|| printf "%s\\n" "$key" >> "$HOME/.ssh/authorized_keys"'
)


@dataclass(frozen=True)
class Target:
    name: str
    address: str
    port: int
    user: str
    known_hosts: Path
    connect_timeout: int = 5

    def ssh(self, *options: str) -> list[str]:
        return [
            "ssh",
            "-p",
            str(self.port),
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            known_hosts_option(str(self.known_hosts)),
            "-o",
            f"ConnectTimeout={self.connect_timeout}",
            *options,
            f"{self.user}@{self.address}",
            "--",
        ]


def key_logs_in(target: Target, identity: Path) -> bool:
    """Whether UGRO's key already logs in (then no password is asked for)."""
    done = _run(
        [
            *target.ssh("-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", str(identity)),
            "true",
        ],
        timeout=target.connect_timeout + 20,
    )
    return done.returncode == 0


def install_key(target: Target, public_key: str) -> str | None:
    """UGRO's public key appended to the node user's authorized_keys, the login made with the
    user's password (ssh asks for it once); None when done, else ssh's last word."""
    command = [
        *target.ssh(
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=keyboard-interactive,password",
            "-o",
            "NumberOfPasswordPrompts=1",
        ),
        shlex.join(["sh", "-c", _INSTALL_KEY]),
    ]
    done = _run(command, stdin=public_key + "\n", timeout=target.connect_timeout + 120)
    if done.returncode == 0:
        return None
    return _last_line(done.stderr) or f"ssh exited {done.returncode}"


def probe(target: Target, identity: Path) -> facts.Facts | str:
    """What the node has (ugro.enrol.facts), or why it could not be asked."""
    done = _run(
        [
            *target.ssh("-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", str(identity)),
            shlex.join(["sh", "-c", facts.SCRIPT]),
        ],
        timeout=target.connect_timeout + 60,
    )
    if done.returncode != 0:
        return _last_line(done.stderr) or f"ssh exited {done.returncode}"
    return facts.parse(done.stdout)


def probe_here() -> facts.Facts:
    """The same facts of this machine (`ugro init`)."""
    done = _run(["sh", "-c", facts.SCRIPT], timeout=60)
    return facts.parse(done.stdout)


def _run(
    argv: list[str], *, stdin: str | None = None, timeout: float
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv,
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 255, "", f"no answer within {timeout:.0f}s")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""
