"""The sandbox is a real cluster: SSH with host keys, its own hostnames, a network, faults."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.integration.conftest import ssh_as
from ugro.core.errors import SandboxError
from ugro.sandbox import faults, system
from ugro.sandbox import status as sandbox_status

pytestmark = pytest.mark.sandbox


def test_ssh_as_each_node_user_with_host_keys_checked(sandbox) -> None:
    assert [n.user for n in sandbox.nodes] == ["ob", "ollie"] or sandbox.name != "ugro"
    for node in sandbox.nodes:
        done = ssh_as(sandbox, node, "id", "-un")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == node.user
        # Each node has its own hostname (its own UTS namespace) and home.
        done = ssh_as(sandbox, node, "sh", "-c", 'echo "$(hostname) $HOME"')
        assert done.stdout.split() == [node.hostname, node.home]
        # The nodes' environment is theirs to run (root's pyenv under /root is not).
        done = ssh_as(
            sandbox, node, f"{sandbox.env_dir}/bin/python", "-c", "import torch; print('ok')"
        )
        assert done.stdout.strip() == "ok", done.stderr


PROCESSES = """\
import os
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
print(open("/proc/1/comm").read().strip(), len(pids), os.getpid() in pids)
"""


def test_each_node_sees_only_its_own_processes(sandbox) -> None:
    """A PID namespace and a /proc of its own per node: the first process is its sshd, and a
    node's processes (a handful) are all it can see or signal, as on a real host."""
    host = sum(1 for p in Path("/proc").iterdir() if p.name.isdigit())
    for node in sandbox.nodes:
        done = ssh_as(sandbox, node, "python3", "-c", PROCESSES)
        assert done.returncode == 0, done.stderr
        first, count, mine = done.stdout.split()
        assert first == "sshd" and mine == "True"
        assert int(count) < host


def test_host_key_checking_is_on(sandbox, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    done = ssh_as(sandbox, sandbox.nodes[0], "true", known_hosts=str(empty))
    assert done.returncode == 255
    assert "Host key verification failed" in done.stderr


def test_worker_reaches_the_master_over_tcp(sandbox) -> None:
    listener = socket.create_server((sandbox.master_address, 0))
    port = listener.getsockname()[1]
    got: list[bytes] = []

    def accept() -> None:
        listener.settimeout(20)
        conn, _ = listener.accept()
        with conn:
            got.append(conn.recv(64))

    thread = threading.Thread(target=accept)
    thread.start()
    code = (
        f"import socket; s = socket.create_connection(('{sandbox.master_address}', {port}), 5); "
        "s.sendall(b'hello from ' + socket.gethostname().encode())"
    )
    done = ssh_as(sandbox, sandbox.nodes[-1], "/usr/bin/python3", "-c", code)
    thread.join(25)
    listener.close()
    assert done.returncode == 0, done.stderr
    assert got == [f"hello from {sandbox.nodes[-1].hostname}".encode()]


def test_no_route_leads_off_the_machine(sandbox) -> None:
    routes = subprocess.run(
        ["ip", "netns", "exec", sandbox.nodes[0].netns, "ip", "route"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "default" not in routes
    assert routes.strip().startswith(sandbox.subnet)


def test_fault_down_and_up(sandbox) -> None:
    node = sandbox.nodes[-1]
    # A process of the node's user, which `down` must stop along with sshd.
    sleeper = ssh_as(sandbox, node, "sh", "-c", "nohup sleep 300 >/dev/null 2>&1 & echo $!")
    assert sleeper.returncode == 0
    faults.fault(sandbox.name, node.name, "down")
    try:
        assert system.tcp_banner(node.address) is None
        assert system.netns_pids(node.netns) == []
        assert ssh_as(sandbox, node, "true").returncode == 255
        _, rows = sandbox_status.status(sandbox.name)
        assert {r.name: r.sshd for r in rows}[node.name] == "down"
    finally:
        faults.fault(sandbox.name, node.name, "up")
    assert ssh_as(sandbox, node, "true").returncode == 0


def test_fault_partition_and_heal(sandbox) -> None:
    node = sandbox.nodes[0]
    faults.fault(sandbox.name, node.name, "partition")
    try:
        started = time.monotonic()
        assert system.tcp_banner(node.address, timeout=2) is None
        assert time.monotonic() - started >= 1.5  # dropped, not refused: the link is gone
    finally:
        faults.fault(sandbox.name, node.name, "heal")
    assert (system.tcp_banner(node.address, timeout=5) or "").startswith("SSH-")


def test_fault_slow(sandbox) -> None:
    node = sandbox.nodes[0]
    faults.fault(sandbox.name, node.name, "slow", rate_kbit=800)
    try:
        shown = subprocess.run(
            ["tc", "qdisc", "show", "dev", node.veth_host],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "tbf" in shown and "800Kbit" in shown
        try:
            faults.fault(sandbox.name, node.name, "slow", delay_ms=40)
        except SandboxError as exc:
            assert "no netem qdisc" in exc.message
            pytest.skip("this kernel has no netem: delay is refused with a clear message")
        shown = subprocess.run(
            ["tc", "qdisc", "show", "dev", node.veth_host],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "netem" in shown and "delay 40" in shown
    finally:
        faults.fault(sandbox.name, node.name, "heal")
        shown = subprocess.run(
            ["tc", "qdisc", "show", "dev", node.veth_host],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "tbf" not in shown and "netem" not in shown
