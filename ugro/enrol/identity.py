"""UGRO's own SSH identity on the master: a key pair and a known_hosts of its own, mode 0600,
in UGRO's config directory (~/.config/ugro), made once and never replaced."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ugro.core.cluster import Cluster
from ugro.core.errors import PrerequisiteError, UsageError
from ugro.nodes import hostkeys

KEY_NAME = "id_ed25519"
KNOWN_HOSTS_NAME = "known_hosts"
# Where ssh looks for a key when cluster.yaml names none, best first.
_SSH_DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")


def config_dir() -> Path:
    """UGRO's config directory: where `ugro init` writes cluster.yaml, its key and known_hosts."""
    return Path.home() / ".config" / "ugro"


def ensure_key_pair(private: Path, comment: str) -> bool:
    """The key pair at `private` (and `.pub`), made unless it is there; True when made."""
    if private.exists():
        return False
    private.parent.mkdir(parents=True, exist_ok=True)
    private.parent.chmod(0o700)
    try:
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(private)],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except FileNotFoundError:
        raise PrerequisiteError(
            "ssh-keygen is not installed (apt-get install openssh-client)"
        ) from None
    private.chmod(0o600)
    return True


def ensure_known_hosts(path: Path) -> bool:
    if path.exists():
        return False
    hostkeys.write_private(path, "")
    return True


def public_key_of(cluster: Cluster) -> tuple[Path, str]:
    """The private key ssh logs in with and its public half's text: cluster.yaml's
    ssh.identity_file, else the first of ssh's own default keys."""
    if cluster.ssh.identity_file:
        candidates = [Path(os.path.expanduser(cluster.ssh.identity_file))]
    else:
        candidates = [Path.home() / ".ssh" / name for name in _SSH_DEFAULT_KEYS]
    for private in candidates:
        public = private.with_name(private.name + ".pub")
        if private.is_file() and public.is_file():
            return private, public.read_text(encoding="utf-8").strip()
    where = cluster.ssh.identity_file or "~/.ssh"
    raise UsageError(
        f"ssh.identity_file: no key pair at {where} (a private key and its .pub); "
        "`ugro init` makes UGRO's own"
    )
