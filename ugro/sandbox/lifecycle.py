"""Bringing a sandbox up and down (its faults: sandbox.faults; how it is: sandbox.status)."""

from __future__ import annotations

import getpass
import ipaddress
import logging
import os
import pwd
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from ugro.core import processes
from ugro.core.errors import SandboxError, UsageError
from ugro.nodes import hostkeys
from ugro.sandbox import layout, system
from ugro.sandbox import slurm as sandbox_slurm
from ugro.sandbox.layout import NodePlan, Sandbox
from ugro.sandbox.nodeenv import default_packages, ensure_env
from ugro.sandbox.nodeinit import CGROUP_ENV, HIDE_ENV, PRIVATE_ENV

log = logging.getLogger(__name__)
Echo = Callable[[str], None]

SSHD_READY_TIMEOUT = 20.0
NODE_PATH = "/usr/local/bin:/usr/bin:/bin"  # what sshd gives a node user's commands
SSHD_CONFIG = """\
# Written by `ugro sandbox up` for node {node}.
ListenAddress {address}
Port 22
HostKey {host_key}
PidFile none
AllowUsers {user}
AuthorizedKeysFile {authorized_keys}
PubkeyAuthentication yes
PasswordAuthentication {passwords}
KbdInteractiveAuthentication no
PermitRootLogin {root_login}
UsePAM no
StrictModes yes
X11Forwarding no
PrintMotd no
# Ansible multiplexes many sessions over one ControlPersist connection.
MaxSessions 64
MaxStartups 64:30:128
Subsystem sftp internal-sftp
"""


# --- up -----------------------------------------------------------------------------------------


def up(
    name: str = layout.DEFAULT_NAME,
    *,
    nodes: int = layout.DEFAULT_NODES,
    subnet: str = layout.DEFAULT_SUBNET,
    packages: list[str] | None = None,
    wheelhouse: str | None = None,
    bare: bool = False,
    slurm: bool = False,
    echo: Echo = print,
) -> Sandbox:
    system.check_prerequisites()
    if slurm:
        sandbox_slurm.check_prerequisites()
    if layout.load(name) is not None:
        raise UsageError(f"sandbox {name} is already up; `ugro sandbox down` first to remake it")
    sandbox = layout.plan(name, nodes, subnet, master_user=_current_user(), slurm=slurm)
    sandbox.bare = bare
    _check_free(sandbox)
    ensure_env(
        Path(sandbox.env_dir), packages or default_packages(), wheelhouse=wheelhouse, echo=echo
    )
    started = time.monotonic()
    try:
        _make(sandbox)
    except BaseException:
        # Leave nothing behind from a half-made sandbox; the original error is what matters.
        try:
            down(name, echo=lambda _line: None)
        except Exception:
            log.exception("cleaning up after a failed `sandbox up`")
        raise
    log.info("sandbox %s up with %d nodes in %.1fs", name, nodes, time.monotonic() - started)
    return sandbox


def _current_user() -> str:
    return getpass.getuser()


def _check_free(sandbox: Sandbox) -> None:
    """Refuse to reuse what belongs to someone else: a user, a network, a namespace."""
    network = ipaddress.ip_network(sandbox.subnet)
    for route in system.routes():
        destination = route.get("dst", "")
        if destination in ("", "default"):
            continue
        try:
            other = ipaddress.ip_network(destination, strict=False)
        except ValueError:
            continue
        if other.version == 4 and other.overlaps(network) and route.get("dev") != sandbox.bridge:
            raise UsageError(
                f"--subnet {sandbox.subnet} overlaps {destination} on {route.get('dev')}; "
                "choose another subnet"
            )
    marker = _user_marker(sandbox.name)
    for node in [] if sandbox.slurm else sandbox.nodes:  # a Slurm sandbox makes no users
        if system.user_exists(node.user):
            owned = any(u.pw_name == node.user for u in system.users_marked(marker))
            hint = (
                "left by an earlier sandbox: `ugro sandbox down`" if owned else "not the sandbox's"
            )
            raise UsageError(f"user {node.user} already exists ({hint})")
    leftovers = [
        ns for ns in system.netns_list() if ns.startswith(layout.netns_prefix(sandbox.name))
    ]
    if leftovers or sandbox.bridge in system.links():
        raise UsageError(
            f"sandbox {sandbox.name} left namespaces or links behind; `ugro sandbox down` first"
        )


def _user_marker(name: str) -> str:
    return f"{layout.USER_MARKER} {name}"


def _make(sandbox: Sandbox) -> None:
    root = sandbox.root
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    sandbox.master_project.mkdir(exist_ok=True)
    sandbox.save()
    system.run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            f"ugro-sandbox-{sandbox.name}",
            "-f",
            str(sandbox.identity_file),
        ]
    )
    public_key = sandbox.identity_file.with_suffix(".pub").read_text(encoding="utf-8")
    password = None
    if sandbox.bare:
        password = secrets.token_urlsafe(12)
        hostkeys.write_private(sandbox.password_file, password + "\n")
    prefix = ipaddress.ip_network(sandbox.subnet).prefixlen

    system.run(["ip", "link", "add", sandbox.bridge, "type", "bridge"])
    system.run(["ip", "addr", "add", f"{sandbox.master_address}/{prefix}", "dev", sandbox.bridge])
    system.run(["ip", "link", "set", sandbox.bridge, "up"])

    marker = _user_marker(sandbox.name)
    for node in sandbox.nodes:
        _make_network(sandbox, node, prefix)
        if sandbox.slurm:
            sandbox_slurm.make_home(sandbox, node, public_key)
        else:
            _make_user(node, marker, None if sandbox.bare else public_key, password)
        sandbox.save()

    # Host keys are independent of each other: make them side by side.
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda node: make_host_key(sandbox, node), sandbox.nodes))
    known = []
    for node in [] if sandbox.bare else sandbox.nodes:
        host_key = (sandbox.node_dir(node) / "ssh_host_ed25519_key.pub").read_text().split()
        known.append(f"{node.address} {host_key[0]} {host_key[1]}\n")
    sandbox.known_hosts.write_text("".join(known), encoding="utf-8")

    for node in sandbox.nodes:
        start_sshd(sandbox, node)
        sandbox.save()
    wait_for_sshd(sandbox, sandbox.nodes)
    sandbox.cluster_file.write_text(_cluster_text(sandbox), encoding="utf-8")
    sandbox.save()


def _make_network(sandbox: Sandbox, node: NodePlan, prefix: int) -> None:
    system.run(["ip", "netns", "add", node.netns])
    system.run(
        [
            "ip",
            "link",
            "add",
            node.veth_host,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            node.netns,
        ]
    )
    system.run(["ip", "link", "set", node.veth_host, "master", sandbox.bridge, "up"])
    for argv in (
        ["ip", "addr", "add", f"{node.address}/{prefix}", "dev", "eth0"],
        ["ip", "link", "set", "eth0", "up"],
        ["ip", "link", "set", "lo", "up"],
    ):
        system.run(system.in_netns(node.netns, argv))


def _make_user(node: NodePlan, marker: str, public_key: str | None, password: str | None) -> None:
    system.run(
        [
            "useradd",
            "--create-home",
            "--home-dir",
            node.home,
            "--shell",
            "/bin/bash",
            "--comment",
            marker,
            node.user,
        ]
    )
    # useradd leaves the password field locked ('!'), which sshd without PAM treats as a locked
    # account even for key logins; '*' means "no password" without locking the account.
    system.run(["usermod", "--password", "*", node.user])
    if password is not None:  # on chpasswd's stdin: never in an argv that ps would show
        system.run(["chpasswd"], input=f"{node.user}:{password}\n")
    entry = pwd.getpwnam(node.user)
    ssh_dir = Path(node.home) / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    os.chown(ssh_dir, entry.pw_uid, entry.pw_gid)
    if public_key is None:  # bare: the key is installed by whoever enrols the node
        return
    keys = ssh_dir / "authorized_keys"
    keys.write_text(public_key, encoding="utf-8")
    keys.chmod(0o600)
    os.chown(keys, entry.pw_uid, entry.pw_gid)


def make_host_key(sandbox: Sandbox, node: NodePlan) -> None:
    directory = sandbox.node_dir(node)
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / "ssh_host_ed25519_key"
    system.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", node.name, "-f", str(key)])
    (directory / "sshd_config").write_text(
        SSHD_CONFIG.format(
            node=node.name,
            address=node.address,
            host_key=key,
            user=node.user,
            passwords="yes" if sandbox.bare else "no",
            # A Slurm sandbox's nodes log in as the master's user (root here), whose own
            # authorized_keys is this machine's: theirs is the sandbox's.
            authorized_keys=sandbox_slurm.authorized_keys(sandbox)
            if sandbox.slurm
            else ".ssh/authorized_keys",
            root_login="prohibit-password" if sandbox.slurm else "no",
        ),
        encoding="utf-8",
    )


def start_sshd(sandbox: Sandbox, node: NodePlan) -> None:
    directory = sandbox.node_dir(node)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    sshd = system.which("sshd") or "/usr/sbin/sshd"
    argv = system.in_netns(
        node.netns,
        [
            # Its own hostname (UTS), and its own PID namespace with a /proc to match: a node's
            # processes are reachable only through its sshd, as on a real host.
            "unshare",
            "--uts",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            sys.executable,
            "-m",
            "ugro.sandbox.nodeinit",
            node.hostname,
            sshd,
            "-D",
            "-e",
            "-f",
            str(directory / "sshd_config"),
        ],
    )
    # ip netns exec execs unshare, which forks the namespace's first process (nodeinit, then
    # sshd) and waits for it: the pid is unshare's, alive as long as sshd is.
    env = dict(os.environ)
    if node.hidden:
        env[HIDE_ENV] = ":".join(_program_files(node.hidden))
    if sandbox.slurm:
        binds = sandbox_slurm.private_binds(sandbox, node)
        env[PRIVATE_ENV] = ":".join(f"{source}={target}" for source, target in binds)
        env[CGROUP_ENV] = sandbox_slurm.cgroup_kind()
    process = processes.spawn_detached(argv, directory / "sshd.log", env=env)
    node.sshd_pid = process.pid
    node.down = False


def _program_files(programs: list[str]) -> list[str]:
    """Where a node user's shell would find each program (sshd's default PATH), each file once."""
    found = {
        os.path.realpath(path)
        for program in programs
        for directory in NODE_PATH.split(":")
        if os.path.exists(path := os.path.join(directory, program))
    }
    return sorted(found)


def wait_for_sshd(sandbox: Sandbox, nodes: list[NodePlan]) -> None:
    deadline = time.monotonic() + SSHD_READY_TIMEOUT
    waiting = list(nodes)
    while waiting and time.monotonic() < deadline:
        waiting = [
            n
            for n in waiting
            if not (system.tcp_banner(n.address, timeout=0.5) or "").startswith("SSH-")
        ]
        if waiting:
            time.sleep(0.05)
    if waiting:
        node = waiting[0]
        tail = _tail(sandbox.node_dir(node) / "sshd.log")
        raise SandboxError(
            f"sshd on {node.name} ({node.address}) did not answer within "
            f"{SSHD_READY_TIMEOUT:.0f}s" + (f": {tail}" if tail else "")
        )


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _cluster_text(sandbox: Sandbox) -> str:
    header = (
        f"# Written by `ugro sandbox up` for sandbox {sandbox.name}; "
        "removed by `ugro sandbox down`.\n"
        f"# Use it with: ugro --config {sandbox.cluster_file} health\n"
    )
    described = layout.cluster_yaml(sandbox)
    if sandbox.slurm:  # no systemd here: the role starts the daemons by their pid files
        described["slurm"] = {
            "cluster_name": sandbox_slurm.cluster_name(sandbox.name),
            "services": "direct",
        }
    if sandbox.bare:
        # Nothing of a bare node is known yet: the way to enrol each is.
        described.pop("workers")
        header += "# Its nodes are bare; enrol them with (password in node_password beside it):\n"
        header += "".join(
            f"#   ugro --config {sandbox.cluster_file} node add {n.name} --ip {n.address} "
            f"--user {n.user}\n"
            for n in sandbox.nodes
        )
    return header + yaml.safe_dump(described, sort_keys=False)


# --- down ---------------------------------------------------------------------------------------


@dataclass
class Removed:
    processes: int = 0
    namespaces: int = 0
    links: int = 0
    users: int = 0
    files: bool = False

    def describe(self) -> str:
        return (
            f"{self.processes} processes, {self.namespaces} namespaces, {self.links} links, "
            f"{self.users} users" + (", its files" if self.files else "")
        )


def down(
    name: str = layout.DEFAULT_NAME, *, purge_env: bool = False, echo: Echo = print
) -> Removed:
    """Remove everything the sandbox made; safe to run again, and after a half-finished `up`."""
    system.check_prerequisites()
    layout.check_name(name)
    removed = Removed()
    sandbox = layout.load(name)
    namespaces = [ns for ns in system.netns_list() if ns.startswith(layout.netns_prefix(name))]
    users = system.users_marked(_user_marker(name))

    pids: set[int] = set()
    for netns in namespaces:
        pids.update(system.netns_pids(netns))
    for user in users:
        pids.update(processes.of_user(user.pw_uid))
    if sandbox:
        pids.update(n.sshd_pid for n in sandbox.nodes if processes.alive(n.sshd_pid))  # type: ignore[misc]
        pids.update(n.throttle_pid for n in sandbox.nodes if processes.alive(n.throttle_pid))  # type: ignore[misc]
    processes.end(pids)
    removed.processes = len(pids)
    node_names = [n.name for n in sandbox.nodes] if sandbox else []
    sandbox_slurm.remove(name, [layout.MASTER_NAME, *node_names])

    for netns in namespaces:
        system.run(["ip", "netns", "delete", netns], check=False)
        removed.namespaces += 1
    # Deleting a namespace deletes its end of each veth pair, and with it the host end.
    for link in system.links():
        if link == layout.bridge_name(name) or _is_our_veth(name, link):
            system.run(["ip", "link", "delete", link], check=False)
            removed.links += 1
    for user in users:
        system.run(["userdel", "--remove", user.pw_name], check=False)
        removed.users += 1
    state_dir = layout.sandbox_root() / name
    if state_dir.exists():
        shutil.rmtree(state_dir)
        removed.files = True
    if purge_env:
        env = Path(sandbox.env_dir) if sandbox else layout.env_dir()
        shutil.rmtree(env, ignore_errors=True)
    return removed


def _is_our_veth(name: str, link: str) -> bool:
    prefix = layout.veth_prefix(name)
    return link.startswith(prefix) and link[len(prefix) :].isdigit()
