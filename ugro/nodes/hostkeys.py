"""Nodes' SSH host keys: fetched once, checked by a person (or against a fingerprint given),
kept in UGRO's known_hosts, and never trusted blindly afterwards.

OpenSSH's own answer to a first connection is trust on first use with the fingerprint read by
a person: `ugro node add` makes that easy, and `ugro node rekey` is the one way a changed key
gets back in. Every other command runs ssh with StrictHostKeyChecking=yes; when ssh refuses a
node for its key, `explain_refusal` says which key changed into which, and the way out.

The file is plain (one `host keytype base64` line per key, `[host]:port` off port 22) and is
rewritten whole, atomically, mode 0600: a failed step never leaves half an edit.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ugro.core.cluster import Cluster, Node
from ugro.core.errors import UsageError

# The types ssh-keyscan is asked for, best first: one key is confirmed and kept per node, and
# OpenSSH prefers the algorithms of the keys it already knows for a host.
KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
)
_SCAN_TYPES = "ed25519,ecdsa,rsa"
# Where each type's public key lives on a Debian-like node: what its owner reads on its console.
_HOST_KEY_FILES = {
    "ssh-ed25519": "/etc/ssh/ssh_host_ed25519_key.pub",
    "ssh-rsa": "/etc/ssh/ssh_host_rsa_key.pub",
}
_CHANGED_SIGNS = ("REMOTE HOST IDENTIFICATION HAS CHANGED", "Host key verification failed")


@dataclass(frozen=True)
class HostKey:
    key_type: str
    blob: str  # base64, as ssh writes it

    @property
    def fingerprint(self) -> str:
        """ssh-keygen -l's SHA256 form: the digest of the key blob, base64 without padding."""
        digest = hashlib.sha256(base64.b64decode(self.blob)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    def console_command(self) -> str:
        path = _HOST_KEY_FILES.get(self.key_type, "/etc/ssh/ssh_host_ecdsa_key.pub")
        return f"ssh-keygen -lf {path}"


def host_pattern(address: str, port: int) -> str:
    """How known_hosts names a host: bare on port 22, else `[address]:port`."""
    return address if port == 22 else f"[{address}]:{port}"


def known_hosts_of(cluster: Cluster) -> Path:
    """The known_hosts a cluster's ssh uses: cluster.yaml's ssh.known_hosts, else ssh's own."""
    if cluster.ssh.known_hosts:
        return Path(os.path.expanduser(cluster.ssh.known_hosts))
    return Path.home() / ".ssh" / "known_hosts"


# --- Reading and writing known_hosts ------------------------------------------------------------


def _entries(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []


def _line_hosts(line: str) -> tuple[list[str], str, str] | None:
    fields = line.split()
    if len(fields) < 3 or line.lstrip().startswith(("#", "@")):
        return None
    return fields[0].split(","), fields[1], fields[2]


def known_keys(path: Path, address: str, port: int) -> list[HostKey]:
    """The keys known_hosts holds for a host (hashed entries are not UGRO's and are skipped)."""
    pattern = host_pattern(address, port)
    keys = []
    for line in _entries(path):
        parsed = _line_hosts(line)
        if parsed and pattern in parsed[0]:
            keys.append(HostKey(parsed[1], parsed[2]))
    return keys


def with_key(path: Path, address: str, port: int, key: HostKey | None) -> str:
    """known_hosts' text with the host's lines replaced by `key` (None: removed), every other
    line as it was."""
    pattern = host_pattern(address, port)
    kept = []
    for line in _entries(path):
        parsed = _line_hosts(line)
        if parsed and pattern in parsed[0]:
            others = [h for h in parsed[0] if h != pattern]
            if not others:
                continue
            line = " ".join([",".join(others), *line.split()[1:]])
        kept.append(line)
    if key is not None:
        kept.append(f"{pattern} {key.key_type} {key.blob}")
    return "".join(f"{line}\n" for line in kept)


def write_private(path: Path, text: str) -> None:
    """The file replaced whole (a temporary beside it, renamed over it), mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# --- Asking a node ------------------------------------------------------------------------------


def scan(address: str, port: int, *, timeout: int = 5) -> list[HostKey]:
    """The host keys a node's sshd offers (ssh-keyscan), best type first. An address is never
    taken for an option: the caller has checked it (no leading '-')."""
    if address.startswith("-"):
        raise UsageError(f"{address!r} is not an address")
    try:
        done = subprocess.run(
            ["ssh-keyscan", "-T", str(timeout), "-p", str(port), "-t", _SCAN_TYPES, address],
            capture_output=True,
            text=True,
            timeout=timeout * 3 + 5,
            check=False,
        )
    except FileNotFoundError:
        raise UsageError("ssh-keyscan is not installed (apt-get install openssh-client)") from None
    except subprocess.TimeoutExpired:
        return []
    keys = []
    for line in done.stdout.splitlines():
        parsed = _line_hosts(line)
        if parsed is None or parsed[1] not in KEY_TYPES:
            continue
        try:
            base64.b64decode(parsed[2], validate=True)
        except (binascii.Error, ValueError):
            continue
        keys.append(HostKey(parsed[1], parsed[2]))
    return sorted(set(keys), key=lambda k: KEY_TYPES.index(k.key_type))


def explain_refusal(
    known_hosts: Path, node_name: str, address: str, port: int, ssh_said: str
) -> str | None:
    """Why ssh refused a node for its host key, with both fingerprints and the way out; None
    when ssh's message is not about the host key."""
    if not any(sign in ssh_said for sign in _CHANGED_SIGNS):
        return None
    known = known_keys(known_hosts, address, port)
    offered = scan(address, port)
    if not known:
        return (
            f"{node_name} ({address}) has no known host key in {known_hosts}; "
            f"`ugro node rekey {node_name}` fetches it and asks you to confirm its fingerprint"
        )
    now = next((k for k in offered if k.key_type == known[0].key_type), None)
    offers = now.fingerprint if now else (offered[0].fingerprint if offered else "nothing")
    return (
        f"{node_name} ({address}) now offers host key {offers}, not the known "
        f"{known[0].fingerprint}: refused. If {node_name} was reinstalled, check the new "
        f"fingerprint on its console ({known[0].console_command()}) and run "
        f"`ugro node rekey {node_name}`"
    )


def explain(cluster: Cluster, node: Node, ssh_said: str) -> str | None:
    """Where ssh refused a node for its host key: why, with both fingerprints and the way out
    (`explain_refusal`); None for anything else ssh says."""
    if node.connection == "local":
        return None
    return explain_refusal(known_hosts_of(cluster), node.name, node.address, node.port, ssh_said)
