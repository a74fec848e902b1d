"""Health verdicts and drift, from run results shaped as ugro.runner builds them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SEED_CLUSTER
from ugro.config import load_cluster_file
from ugro.core.files import read_json
from ugro.health.verdicts import assess, find_drift, save
from ugro.nodes.runner import HostOutcome, RunResult


def report(
    torch: str = "2.5.1+cu124", python: str = "3.11.9", problems: list | None = None
) -> dict:
    return {
        "healthy": not problems,
        "problems": problems or [],
        "effective_accelerator": "cuda",
        "gpus": [{"name": "RTX 4070"}],
        "env": {"torch_version": torch, "python_version": python, "cuda_build": "12.4"},
    }


def test_drift_names_nodes() -> None:
    reports = {"gpu-master": report(), "gpu1": report(torch="2.4.0+cu121"), "gpu2": report()}
    (warning,) = find_drift(reports, {})
    assert (
        warning
        == "torch differs across nodes: gpu-master=2.5.1+cu124, gpu1=2.4.0+cu121, gpu2=2.5.1+cu124"
    )


def test_drift_against_declared_versions() -> None:
    reports = {"gpu1": report(python="3.11.9"), "gpu2": report(python="3.11.9")}
    assert find_drift(reports, {"python": "3.11", "torch": "2.5.1"}) == []
    assert find_drift(reports, {"torch": "2.1.0"}) == [
        "torch is not the declared 2.1.0 on gpu1=2.5.1+cu124, gpu2=2.5.1+cu124"
    ]


def test_assess_and_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    cluster = load_cluster_file(SEED_CLUSTER)
    result = RunResult(
        "health",
        "failed",
        2,
        tmp_path,
        None,
        {
            "gpu-master": HostOutcome("gpu-master", facts={"ugro_health_report": report()}),
            "gpu1": HostOutcome(
                "gpu1",
                unreachable=True,
                message="connect to host 192.168.1.101 port 22: No route to host",
            ),
            "gpu2": HostOutcome(
                "gpu2",
                failed=True,
                facts={"ugro_health_report": report(problems=["torch is not importable"])},
            ),
        },
    )
    summary = assess(cluster, result, ["gpu-master", "gpu1", "gpu2"])
    assert [(n.name, n.status) for n in summary.nodes] == [
        ("gpu-master", "healthy"),
        ("gpu1", "unreachable"),
        ("gpu2", "unhealthy"),
    ]
    assert summary.nodes[1].message.endswith("No route to host")
    assert summary.nodes[2].message == "torch is not importable"
    assert not summary.healthy
    save(cluster, summary)
    state = read_json(cluster.paths.cluster_state)
    assert state["nodes"]["gpu1"]["status"] == "unreachable"
    assert state["healthy"] is False


def test_the_table_says_when_torch_facts_were_cached() -> None:
    from ugro.display.nodes import health_table
    from ugro.health.verdicts import HealthSummary, NodeHealth

    fresh = report()
    cached = report()
    cached["env"]["cached_since"] = "2026-11-29T10:00:00Z"

    def table(*reports: dict):
        nodes = tuple(
            NodeHealth(f"gpu{i}", i, "healthy", "ready", r) for i, r in enumerate(reports)
        )
        return health_table(HealthSummary("lab", "now", nodes, (), None))

    assert table(fresh, fresh).caption is None
    caption = table(fresh, cached).caption
    assert caption.startswith("torch on 1 node(s)") and "ugro health --deep" in caption
