"""Faults injected into a sandbox node, as real machines fail: `ugro sandbox fault NODE ACTION`.

down (every process of the node killed, as by a power cut), up, partition (its link down),
slow (netem delay or a tbf rate on both ends), cpu --percent (its processes held to a share of
a CPU, ugro.sandbox.throttle), mtu, block --peer (a pair that cannot connect), hide --tool (a
program the node seems never to have had), reinstall (a new host key), and heal, which undoes
every one but down and reinstall.
"""

from __future__ import annotations

import sys

from ugro.core import processes
from ugro.core.errors import SandboxError, UsageError
from ugro.sandbox import layout, system, throttle
from ugro.sandbox.layout import NodePlan, Sandbox
from ugro.sandbox.lifecycle import make_host_key, start_sshd, wait_for_sshd

FAULTS = ("down", "up", "partition", "heal", "slow", "cpu", "mtu", "block", "hide", "reinstall")
DEFAULT_MTU = 1500
# What a machine may lack before it is enrolled (`hide --tool`): what `ugro node add` checks.
HIDEABLE = ("python3", "rsync")


def fault(
    name: str,
    node_name: str,
    action: str,
    *,
    delay_ms: int | None = None,
    rate_kbit: int | None = None,
    percent: int | None = None,
    mtu: int | None = None,
    peer: str | None = None,
    tool: str | None = None,
) -> NodePlan:
    system.check_prerequisites()
    sandbox = layout.load(name)
    if sandbox is None:
        raise UsageError(f"sandbox {name} is not up; start it with `ugro sandbox up`")
    node = sandbox.node(node_name)
    if action == "down":
        # Every process in the node stops, sshd and whatever it started, as if it lost power.
        processes.end(system.netns_pids(node.netns))
        node.down = True
    elif action == "up":
        if not processes.alive(node.sshd_pid):
            start_sshd(sandbox, node)
            wait_for_sshd(sandbox, [node])
        node.down = False
    elif action == "partition":
        system.run(["ip", "link", "set", node.veth_host, "down"])
        node.partitioned = True
    elif action == "heal":
        system.run(["ip", "link", "set", node.veth_host, "up"])
        _set_qdisc(node, delay_ms=0, rate_kbit=0)
        node.partitioned = False
        _set_mtu(node, DEFAULT_MTU)
        node.mtu = 0
        for name in list(node.blocked):
            _block(sandbox, node, sandbox.node(name), add=False)
        _throttle(sandbox, node, 0)
        if node.hidden:
            node.hidden = []
            _restart(sandbox, node)
    elif action == "cpu":
        if percent is None or not 1 <= percent <= 100:
            raise UsageError("cpu needs --percent N, 1 to 100 (100: no limit)")
        _throttle(sandbox, node, 0 if percent == 100 else percent)
    elif action == "mtu":
        if mtu is None or not 576 <= mtu <= 9000:
            raise UsageError("mtu needs --mtu N, 576 to 9000")
        _set_mtu(node, mtu)
        node.mtu = 0 if mtu == DEFAULT_MTU else mtu
    elif action == "block":
        if peer is None:
            raise UsageError("block needs --peer NODE: the worker whose packets it drops")
        other = sandbox.node(peer)
        if other.name == node.name:
            raise UsageError(f"block --peer {peer}: a node cannot block itself")
        _block(sandbox, node, other, add=True)
    elif action == "hide":
        if tool not in HIDEABLE:
            raise UsageError(f"hide needs --tool, one of: {', '.join(HIDEABLE)}")
        if tool not in node.hidden:
            node.hidden.append(tool)
        _restart(sandbox, node)
    elif action == "reinstall":
        # A new host key, as the machine would have after a reinstall: its users and files stay.
        for key in sandbox.node_dir(node).glob("ssh_host_ed25519_key*"):
            key.unlink()
        make_host_key(sandbox, node)
        _restart(sandbox, node)
    elif action == "slow":
        if delay_ms is None and rate_kbit is None:
            raise UsageError("slow needs --delay-ms N and/or --rate-kbit N")
        _set_qdisc(node, delay_ms=delay_ms or 0, rate_kbit=rate_kbit or 0)
    else:
        raise UsageError(f"unknown fault {action!r}; expected one of: {', '.join(FAULTS)}")
    sandbox.save()
    return node


def _restart(sandbox: Sandbox, node: NodePlan) -> None:
    """The node's sshd (and everything it started) ended and started again."""
    processes.end(system.netns_pids(node.netns))
    start_sshd(sandbox, node)
    wait_for_sshd(sandbox, [node])
    node.down = False


def _throttle(sandbox: Sandbox, node: NodePlan, percent: int) -> None:
    """Hold the node's processes to percent of the CPU (ugro/sandbox/throttle.py); 0 ends it."""
    if node.throttle_pid and processes.alive(node.throttle_pid):
        processes.end({node.throttle_pid})
    throttle.continue_all(node.netns)
    node.throttle_pid, node.cpu_percent = None, 0
    if percent:
        log_file = sandbox.node_dir(node) / "throttle.log"
        argv = [sys.executable, "-m", "ugro.sandbox.throttle", node.netns, str(percent)]
        node.throttle_pid = processes.spawn_detached(argv, log_file).pid
        node.cpu_percent = percent


def _set_mtu(node: NodePlan, mtu: int) -> None:
    """Both ends of the node's link: a mismatch with its peers is what netcheck should name."""
    system.run(system.in_netns(node.netns, ["ip", "link", "set", "eth0", "mtu", str(mtu)]))


def _block(sandbox: Sandbox, node: NodePlan, other: NodePlan, *, add: bool) -> None:
    """Drop every packet between two workers (a blackhole route on each side, as a firewall's
    DROP would): each still answers the master, so only the pair is cut."""
    verb = "add" if add else "del"
    for here, there in ((node, other), (other, node)):
        system.run(
            system.in_netns(here.netns, ["ip", "route", verb, "blackhole", f"{there.address}/32"]),
            check=False,
        )
    if add and other.name not in node.blocked:
        node.blocked.append(other.name)
    elif not add and other.name in node.blocked:
        node.blocked.remove(other.name)
    sandbox.save()


def _set_qdisc(node: NodePlan, *, delay_ms: int, rate_kbit: int) -> None:
    """Delay (netem) or rate-limit (tbf) both directions of the node's link; zeros clear it."""
    if delay_ms < 0 or rate_kbit < 0:
        raise UsageError("--delay-ms and --rate-kbit must be 0 or more")
    ends = [["tc"], system.in_netns(node.netns, ["tc"])]
    devices = [node.veth_host, "eth0"]
    for prefix, device in zip(ends, devices, strict=True):
        system.run([*prefix, "qdisc", "del", "dev", device, "root"], check=False)
        if delay_ms:
            done = system.run(
                [*prefix, "qdisc", "add", "dev", device, "root", "netem", "delay", f"{delay_ms}ms"],
                check=False,
            )
            if done.returncode != 0:
                if "unknown" in (done.stderr or "").lower():
                    raise SandboxError(
                        "this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM), so delay cannot "
                        "be emulated here; --rate-kbit (tbf) works without it"
                    )
                raise SandboxError(f"tc netem on {device} failed: {done.stderr.strip()}")
        elif rate_kbit:
            system.run(
                [
                    *prefix,
                    "qdisc",
                    "add",
                    "dev",
                    device,
                    "root",
                    "tbf",
                    "rate",
                    f"{rate_kbit}kbit",
                    "burst",
                    "16kbit",
                    "latency",
                    "400ms",
                ]
            )
    node.delay_ms = delay_ms
    node.rate_kbit = 0 if delay_ms else rate_kbit
