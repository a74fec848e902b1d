"""Tables about the nodes: health verdicts, the inventory, the daemon's samples and history,
the network check, the sandbox."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from ugro.display.console import STATUS_STYLE, plain_text

if TYPE_CHECKING:
    from ugro.core.cluster import Cluster
    from ugro.health.verdicts import HealthSummary
    from ugro.records.daemon_files import DaemonState
    from ugro.sandbox.layout import Sandbox
    from ugro.sandbox.status import NodeStatus


def health_table(summary: HealthSummary) -> Table:
    table = Table(title=f"{summary.cluster}: health at {summary.checked_at}", title_justify="left")
    for column in ("Node", "Rank", "Status", "GPU", "VRAM free/total", "Torch", "Message"):
        table.add_column(column, overflow="fold")
    for node in summary.nodes:
        report = node.report
        env = report.get("env") or {}
        gpus = report.get("gpus") or []
        gpu = ", ".join(g.get("name", "?") for g in gpus) or ("CPU" if report else "-")
        vram = (
            ", ".join(
                f"{_gib(g.get('vram_free_mb'))}/{_gib(g.get('vram_total_mb'))} GB" for g in gpus
            )
            or "-"
        )
        torch = env.get("torch_version") or "-"
        if env.get("cuda_build"):
            torch += f" (CUDA {env['cuda_build']})"
        style = STATUS_STYLE.get(node.status, "")
        table.add_row(
            node.name, str(node.rank), f"[{style}]{node.status}[/]", gpu, vram, torch, node.message
        )
    cached = [
        node.name for node in summary.nodes if (node.report.get("env") or {}).get("cached_since")
    ]
    if cached:
        table.caption = (
            f"torch on {len(cached)} node(s): as an earlier import found it, the environment "
            "unchanged since; `ugro health --deep` imports it again"
        )
        table.caption_justify = "left"
    return table


def _gib(megabytes: int | None) -> str:
    return f"{(megabytes or 0) / 1024:.1f}"


def inventory_table(cluster: Cluster) -> Table:
    table = Table(title=f"{cluster.name} ({cluster.describe()})", title_justify="left")
    for column in (
        "Node",
        "Role",
        "Rank",
        "Address",
        "User",
        "Connection",
        "Accelerator",
        "Hardware",
        "Python",
    ):
        table.add_column(column, overflow="fold")
    for node in cluster.nodes:
        address = node.address if node.connection == "local" else f"{node.address}:{node.port}"
        table.add_row(
            node.name,
            node.role,
            str(node.rank),
            address,
            node.user,
            node.connection,
            node.accelerator,
            _hardware(node.hardware),
            node.python,
        )
    about = [text for text in (cluster.description, cluster.location) if text]
    if about:
        table.caption = " - ".join(about)
        table.caption_justify = "left"
    return table


def _hardware(hardware: Mapping[str, Any]) -> str:
    """cluster.yaml's description of a node's hardware, as a person would say it."""
    parts = []
    if hardware.get("gpu_model"):
        count = hardware.get("gpu_count")
        parts.append(f"{count}x {hardware['gpu_model']}" if count else str(hardware["gpu_model"]))
    if hardware.get("vram_gb") is not None:
        parts.append(f"{hardware['vram_gb']:g} GB VRAM")
    if hardware.get("cpu_cores"):
        parts.append(f"{hardware['cpu_cores']} cores")
    if hardware.get("ram_gb") is not None:
        parts.append(f"{hardware['ram_gb']:g} GB RAM")
    return ", ".join(parts) or "-"


def cluster_state_table(state: Mapping[str, Any]) -> Table:
    checked = state.get("checked_at", "?")
    table = Table(
        title=f"{state.get('cluster', '?')}: last health check {checked}", title_justify="left"
    )
    for column in ("Node", "Rank", "Status", "Message"):
        table.add_column(column, overflow="fold")
    nodes = sorted((state.get("nodes") or {}).values(), key=lambda n: n.get("rank", 0))
    for node in nodes:
        style = STATUS_STYLE.get(node.get("status", ""), "")
        table.add_row(
            node.get("name", "?"),
            str(node.get("rank", "?")),
            f"[{style}]{node.get('status', '?')}[/]",
            node.get("message", ""),
        )
    return table


def sandbox_table(sandbox: Sandbox, rows: Iterable[NodeStatus]) -> Table:
    table = Table(
        title=f"sandbox {sandbox.name}: {sandbox.subnet}, master {sandbox.master_address} "
        f"({sandbox.master_user}, this machine)",
        title_justify="left",
    )
    for column in ("Node", "User", "Address", "Namespace", "sshd", "Faults"):
        table.add_column(column)
    for row in rows:
        style = "green" if row.sshd == "answers" else "red"
        table.add_row(
            row.name, row.user, row.address, row.netns, f"[{style}]{row.sshd}[/]", row.faults
        )
    return table


def node_samples_table(
    state: DaemonState, cluster: Cluster, age_s: float, names: Iterable[str] | None = None
) -> Table:
    """The daemon's last verdict on each node (`ugro health`/`status` while it runs)."""
    table = Table(
        title=f"{cluster.name}: health from the daemon, {age_s:.0f}s old (`--now` probes)",
        title_justify="left",
    )
    for column in ("Node", "Rank", "Status", "GPU", "Disk free", "Load", "Busy with", "Problems"):
        table.add_column(column, overflow="fold")
    wanted = set(names) if names is not None else set(cluster.node_names)
    for node in cluster.nodes:
        if node.name not in wanted:
            continue
        sample = state.nodes.get(node.name) or {}
        status = sample.get("status", "not probed")
        style = {"up": "green", "unhealthy": "yellow", "down": "red"}.get(status, "")
        disk = sample.get("disk_free_gb")
        table.add_row(
            node.name,
            str(node.rank),
            f"[{style}]{status}[/]" if style else status,
            ", ".join(sample.get("gpus") or []) or ("CPU" if sample else "-"),
            f"{disk:g} GB" if disk is not None else "-",
            f"{sample['load1']:g}" if sample.get("load1") is not None else "-",
            state.busy.get(node.name, ""),
            "; ".join(sample.get("problems") or []),
        )
    return table


def health_history_table(changes: Iterable[tuple[Any, str]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("When", "Node", "Probe", "Change"):
        table.add_column(column, overflow="fold")
    for sample, text in changes:
        when = datetime.fromtimestamp(sample.at).astimezone().strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(when, sample.node, sample.kind, text)
    return table


def netcheck_tables(report: Mapping[str, Any]) -> list[Table]:
    """`ugro netcheck`: each node's route, each pair's stream, the all-reduce sweep."""
    nodes = Table(title=f"network of {report.get('cluster')}", title_justify="left")
    for column in ("Node", "Interface", "MTU", "Link Mb/s", "Rendezvous"):
        nodes.add_column(column)
    for name, node in (report.get("nodes") or {}).items():
        nodes.add_row(
            name,
            str(node.get("interface") or "-"),
            str(node.get("mtu") or "-"),
            str(node.get("speed_mbps") or "?"),
            plain_text(
                "lead" if name == report.get("lead") else str(node.get("rendezvous") or "-")
            ),
        )
    pairs = Table(title="pairs (a stream on a port the kernel picked)", title_justify="left")
    for column in ("Pair", "Connects", "Mb/s", "Connect ms"):
        pairs.add_column(column)
    for pair in report.get("pairs") or []:
        pairs.add_row(
            " - ".join(pair["nodes"]),
            Text("yes", style="green") if pair.get("ok") else Text("NO", style="red"),
            f"{pair['mbps']:,.0f}" if pair.get("mbps") else "-",
            f"{pair['connect_ms']:.1f}" if pair.get("connect_ms") else "-",
        )
    tables = [nodes, pairs]
    sweep = report.get("sweep") or []
    if sweep:
        table = Table(
            title=f"all-reduce ({report.get('backend')}, {len(report.get('nodes') or {})} nodes)",
            title_justify="left",
        )
        for column in ("Size", "Time ms", "algbw GB/s", "busbw GB/s"):
            table.add_column(column, justify="right")
        for row in sweep:
            table.add_row(
                _bytes(int(row["bytes"])),
                f"{row['seconds'] * 1000:.2f}",
                f"{row['algbw_gbps']:.4f}",
                f"{row['busbw_gbps']:.4f}",
            )
        sync = report.get("lora_sync") or {}
        if sync.get("seconds_per_step") is not None:
            table.caption = (
                f"LoRA gradients ({sync['trainable_parameters']:,} parameters, as "
                f"{sync['from_job']} trained): {sync['seconds_per_step']:.3f} s per step to "
                "synchronise"
            )
        elif sync:
            table.caption = (
                f"Each 10 MB of gradients costs {sync['seconds_per_10mb']:.3f} s per step "
                "(a job's LoRA size is known once one has run)"
            )
        table.caption_justify = "left"
        tables.append(table)
    return tables


def _bytes(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:g} {unit}"
        count //= 1024
    return f"{count} GB"
