"""What a sandbox is made of: names, addresses, users and where its files live.

Everything is derived from the sandbox name, the subnet and the node count, so that `down` can find
what a half-finished `up` made even when its state file was never written.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ugro.config.resolution import OFFLINE_TRAINING
from ugro.core.errors import UsageError

DEFAULT_NAME = "ugro"
DEFAULT_SUBNET = "10.213.0.0/24"
DEFAULT_NODES = 3
MAX_NODES = 200
ROOT_ENV = "UGRO_SANDBOX_ROOT"
ENV_DIR_ENV = "UGRO_SANDBOX_ENV"
DEFAULT_ROOT = Path("/var/lib/ugro/sandbox")
# The nodes' Python environment: world-readable, since /root (and its pyenv) is not.
DEFAULT_ENV_DIR = Path("/opt/ugro/sandbox-env")
MASTER_NAME = "gpu-master"
# The seed's users for the first two workers; generated names after them.
SEED_USERS = ("ob", "ollie")
# Written into each node user's GECOS field, so `down` recognises its users and no others.
USER_MARKER = "ugro-sandbox"

_NAME = re.compile(r"[a-z][a-z0-9]{0,7}")


@dataclass
class NodePlan:
    name: str
    hostname: str
    user: str
    address: str
    rank: int
    netns: str
    veth_host: str
    home: str
    sshd_pid: int | None = None
    down: bool = False
    partitioned: bool = False
    delay_ms: int = 0
    rate_kbit: int = 0
    # The stand-ins for a slower node and a worse network (`ugro sandbox fault`).
    cpu_percent: int = 0  # 0: the whole machine, as every node shares it
    throttle_pid: int | None = None
    mtu: int = 0  # 0: the default
    blocked: list[str] = field(default_factory=list)  # peers whose packets are dropped
    # Programs the node seems not to have (`fault NODE hide --tool T`): /dev/null is bound over
    # each in the node's own mount namespace, as on a machine where they were never installed.
    hidden: list[str] = field(default_factory=list)


@dataclass
class Sandbox:
    name: str
    subnet: str
    master_address: str
    bridge: str
    state_dir: str
    env_dir: str
    master_user: str
    nodes: list[NodePlan] = field(default_factory=list)
    # Bare nodes (`up --bare`), as machines are before they are enrolled: their users log in
    # with a password only, and the master knows neither their keys nor their host keys.
    bare: bool = False
    # Nodes ready for `ugro slurm up` (`up --slurm`): each logs in as the master's user, with a
    # home of its own, and munge's directories are each node's own (ugro.sandbox.slurm).
    slurm: bool = False

    # -- files ------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return Path(self.state_dir)

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def cluster_file(self) -> Path:
        return self.root / "cluster.yaml"

    @property
    def identity_file(self) -> Path:
        return self.root / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def password_file(self) -> Path:
        """A bare sandbox's node users' password (mode 0600): what their owner would type."""
        return self.root / "node_password"

    @property
    def master_project(self) -> Path:
        return self.root / "master"

    def ssh_argv(
        self, node: NodePlan, argv: list[str], *, known_hosts: str | None = None
    ) -> list[str]:
        """`ssh` running argv on a node as its user, with the sandbox's key and host keys."""
        return [
            "ssh",
            "-i",
            str(self.identity_file),
            "-o",
            f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            f"{node.user}@{node.address}",
            "--",
            # ssh joins its arguments into one string for the remote shell: quote each one.
            shlex.join(argv),
        ]

    def node_dir(self, node: NodePlan) -> Path:
        return self.root / "nodes" / node.name

    def node(self, name: str) -> NodePlan:
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes)
        raise UsageError(f"sandbox {self.name}: no worker named {name!r}; the workers are: {known}")

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.state_file)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Sandbox:
        nodes = [NodePlan(**node) for node in data.pop("nodes", [])]
        return cls(**data, nodes=nodes)


def sandbox_root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def env_dir() -> Path:
    return Path(os.environ.get(ENV_DIR_ENV) or DEFAULT_ENV_DIR)


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"sandbox name {name!r} is not valid; expected 1-8 lower-case letters and digits, "
            "starting with a letter (it prefixes interface names, which Linux caps at 15 bytes)"
        )
    return name


def user_for(sandbox_name: str, index: int) -> str:
    base = SEED_USERS[index - 1] if index <= len(SEED_USERS) else f"ugro{index}"
    # A second sandbox beside the default one needs user names of its own.
    return base if sandbox_name == DEFAULT_NAME else f"{sandbox_name}-{base}"


def netns_prefix(sandbox_name: str) -> str:
    return f"{sandbox_name}-"


def veth_prefix(sandbox_name: str) -> str:
    return f"{sandbox_name}v"


def bridge_name(sandbox_name: str) -> str:
    return f"{sandbox_name}-br"


def plan(name: str, nodes: int, subnet: str, master_user: str, *, slurm: bool = False) -> Sandbox:
    """The sandbox `up` would make: nothing is touched here. With `slurm`, every node logs in as
    the master's user (Slurm runs a job as one user everywhere), each with a home of its own."""
    check_name(name)
    if not 2 <= nodes <= MAX_NODES:
        raise UsageError(f"--count {nodes}: expected 2..{MAX_NODES} (the master plus workers)")
    try:
        network = ipaddress.ip_network(subnet, strict=True)
    except ValueError as exc:
        raise UsageError(
            f"--subnet {subnet}: {exc}; expected a network such as 10.213.0.0/24"
        ) from None
    if network.version != 4 or not network.is_private:
        raise UsageError(
            f"--subnet {subnet}: expected a private IPv4 network (10/8, 172.16/12, 192.168/16)"
        )
    hosts = list(network.hosts())
    if len(hosts) < nodes:
        raise UsageError(
            f"--subnet {subnet} has {len(hosts)} addresses; {nodes} nodes need {nodes}"
        )
    sandbox = Sandbox(
        name=name,
        subnet=str(network),
        master_address=str(hosts[0]),
        bridge=bridge_name(name),
        state_dir=str(sandbox_root() / name),
        env_dir=str(env_dir()),
        master_user=master_user,
        slurm=slurm,
    )
    for index in range(1, nodes):
        user = master_user if slurm else user_for(name, index)
        sandbox.nodes.append(
            NodePlan(
                name=f"gpu{index}",
                hostname=f"gpu{index}",
                user=user,
                address=str(hosts[index]),
                rank=index,
                netns=f"{netns_prefix(name)}gpu{index}",
                veth_host=f"{veth_prefix(name)}{index}",
                home=(f"{sandbox.state_dir}/nodes/gpu{index}/home" if slurm else f"/home/{user}"),
            )
        )
    return sandbox


def load(name: str) -> Sandbox | None:
    path = sandbox_root() / check_name(name) / "state.json"
    try:
        return Sandbox.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise UsageError(
            f"{path}: unreadable sandbox state ({exc}); run `ugro sandbox down`"
        ) from None


def rendezvous_port(sandbox_name: str) -> int:
    """Each sandbox's own rendezvous port, never 29500 (the built-in cluster's): every sandbox's
    lead is this machine, and jobs of two clusters must never race for one port."""
    if sandbox_name == DEFAULT_NAME:
        return 29400
    return 29401 + zlib.crc32(sandbox_name.encode()) % 98


def cluster_yaml(sandbox: Sandbox) -> dict[str, Any]:
    """The sandbox as a cluster.yaml in the seed's schema."""
    workers = [
        {
            "name": node.name,
            "hostname": node.hostname,
            "ip": node.address,
            "user": node.user,
            "ssh_port": 22,
            "rank": node.rank,
            "accelerator": "cpu",
            "hardware": {"gpu_model": "none (sandbox CPU node)", "gpu_count": 0},
            "paths": {
                "home": node.home,
                "project": f"{node.home}/projects/UGRO",
                "scripts": f"{node.home}/projects/UGRO/scripts",
            },
        }
        for node in sandbox.nodes
    ]
    return {
        "cluster": {
            "name": f"UGRO sandbox ({sandbox.name})",
            "description": "Network namespaces on this machine, made by `ugro sandbox up`",
            "master": {
                "name": MASTER_NAME,
                "hostname": MASTER_NAME,
                "ip": sandbox.master_address,
                "port": 22,
                "user": sandbox.master_user,
                "connection": "local",
                "accelerator": "cpu",
            },
            "communication": {
                "backend": "c10d",
                "master_port": rendezvous_port(sandbox.name),
                "timeout_seconds": 300,
            },
        },
        "workers": workers,
        "paths": {"project_root": str(sandbox.master_project)},
        "environment": {"manager": "venv", "path": sandbox.env_dir},
        "training": dict(OFFLINE_TRAINING),
        "ssh": {
            "identity_file": str(sandbox.identity_file),
            "known_hosts": str(sandbox.known_hosts),
            "connect_timeout": 5,
        },
    }
