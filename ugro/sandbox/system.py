"""The host operations the sandbox needs: commands as argv lists, processes, users, links.

Every command is an argv list (never a shell string); a failure becomes a SandboxError naming
the command and its last line of stderr.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ugro.core.errors import PrerequisiteError, SandboxError

log = logging.getLogger(__name__)

REQUIRED_TOOLS = {
    "ip": "iproute2",
    "sshd": "openssh-server",
    "ssh-keygen": "openssh-client",
    "useradd": "passwd",
    "userdel": "passwd",
    "unshare": "util-linux",
}
# sshd lives in sbin, which a non-login root shell may not have on PATH.
_SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def which(tool: str) -> str | None:
    found = shutil.which(tool)
    if found:
        return found
    for directory in _SBIN:
        candidate = Path(directory) / tool
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def check_prerequisites() -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("root")
    missing = [f"{tool} ({package})" for tool, package in REQUIRED_TOOLS.items() if not which(tool)]
    problems.extend(missing)
    if problems:
        raise PrerequisiteError(
            f"ugro sandbox needs {', '.join(problems)} on this machine; "
            "install them (apt-get install iproute2 openssh-server) and run as root. "
            "The built-in local cluster works without them: `ugro health`"
        )


def run(
    argv: Sequence[str], *, check: bool = True, timeout: float = 60, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    tool = which(argv[0]) or argv[0]
    command = [tool, *argv[1:]]
    log.debug("run %s", command)
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, input=input
        )
    except FileNotFoundError:
        raise PrerequisiteError(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise SandboxError(f"`{' '.join(argv)}` took over {timeout:.0f}s") from None
    if check and done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        reason = lines[-1] if lines else f"exit {done.returncode}"
        raise SandboxError(f"`{' '.join(argv)}` failed: {reason}")
    return done


# --- network ------------------------------------------------------------------------------------


def netns_list() -> list[str]:
    done = run(["ip", "-j", "netns", "list"], check=False)
    try:
        return [entry["name"] for entry in json.loads(done.stdout or "[]")]
    except (ValueError, KeyError, TypeError):
        return []


def netns_pids(netns: str) -> list[int]:
    done = run(["ip", "netns", "pids", netns], check=False)
    return [int(line) for line in done.stdout.split() if line.isdigit()]


def links() -> list[str]:
    done = run(["ip", "-j", "link", "show"], check=False)
    try:
        return [entry["ifname"] for entry in json.loads(done.stdout or "[]")]
    except (ValueError, KeyError, TypeError):
        return []


def routes() -> list[dict[str, Any]]:
    done = run(["ip", "-j", "route", "show"], check=False)
    try:
        found = json.loads(done.stdout or "[]")
    except ValueError:
        return []
    return [entry for entry in found if isinstance(entry, dict)] if isinstance(found, list) else []


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    """argv run inside a node's network namespace (tools resolved here: sbin may not be on PATH)."""
    return [which("ip") or "ip", "netns", "exec", netns, which(argv[0]) or argv[0], *argv[1:]]


# --- network -----------------------------------------------------------------------------------


def tcp_banner(address: str, port: int = 22, timeout: float = 1.0) -> str | None:
    """The SSH banner a node's sshd sends, or None when nothing answers."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            return conn.recv(64).decode("ascii", "replace").strip() or None
    except OSError:
        return None


# --- users --------------------------------------------------------------------------------------


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def users_marked(marker: str) -> list[pwd.struct_passwd]:
    return [entry for entry in pwd.getpwall() if entry.pw_gecos == marker]
