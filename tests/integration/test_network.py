"""`ugro netcheck` and balanced batches on the 3-node sandbox: real links between network
namespaces (a tbf rate limit, an MTU, blackhole routes as a firewall's drop), real gloo
all-reduces, and real torchrun jobs on a node held to a quarter of a CPU.

Stand-ins, named: a sandbox node's "slower hardware" is the sandbox's throttle (it stops and
continues the node's processes; no cgroup cpu controller here), and a CPU node's memory budget
is declared in cluster.yaml (hardware.vram_gb), not a GPU's."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_ugro
from tests.integration.conftest import ssh_as
from ugro.config import load_cluster_file
from ugro.network import check as netcheck
from ugro.records.history import Jobs
from ugro.sandbox import faults

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

SHORT = ["--", "--max-steps", "8", "--logging-steps", "4", "--eval-strategy", "no"]


def check(sandbox, *args: str, config: Path | None = None):
    return run_ugro("--config", str(config or sandbox.cluster_file), "netcheck", *args, timeout=120)


def report_of(done) -> dict:
    return json.loads(done.stdout)


def test_netcheck_of_a_healthy_network(sandbox) -> None:
    cluster = load_cluster_file(sandbox.cluster_file)
    began = time.monotonic()
    done = check(sandbox, "--json")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert time.monotonic() - began < 15
    report = report_of(done)
    nodes = report["nodes"]
    assert nodes["gpu-master"]["interface"] == sandbox.bridge  # the lead: the one holding it
    for worker in ("gpu1", "gpu2"):
        assert nodes[worker]["interface"] == "eth0"  # the route to the lead, in its namespace
        assert nodes[worker]["rendezvous"] == "ok"
    assert {n["mtu"] for n in nodes.values()} == {1500}
    assert len(report["pairs"]) == 3
    assert all(p["ok"] and p["mbps"] > 100 for p in report["pairs"]), report["pairs"]
    sweep = report["sweep"]
    assert report["backend"] == "gloo" and len(sweep) >= 3
    assert [s["bytes"] for s in sweep] == sorted(s["bytes"] for s in sweep)
    for row in sweep:  # nccl-tests' definition, for 3 ranks (each figure rounded to 1e-6)
        assert row["busbw_gbps"] == pytest.approx(row["algbw_gbps"] * 4 / 3, rel=1e-3, abs=2e-6)
    assert report["findings"] == []
    assert netcheck.cache_path(cluster, cluster.node_names).is_file()
    human = check(sandbox)
    assert human.returncode == 0 and "all-reduce (gloo, 3 nodes)" in human.stdout


def test_netcheck_names_a_slow_link_an_mtu_and_a_cut_pair(sandbox) -> None:
    name = sandbox.name
    try:
        faults.fault(name, "gpu2", "slow", rate_kbit=20_000)
        faults.fault(name, "gpu1", "mtu", mtu=1400)
        done = check(sandbox, "--json")
        assert done.returncode == 0, done.stderr  # warnings: a job would run, slowly
        report = report_of(done)
        found = {(f["subject"], f["severity"]): f for f in report["findings"]}
        slow = found[("gpu2", "warning")]
        assert "gpu2's link is slow" in slow["message"] and "tc qdisc" in slow["fix"]
        mtu = found[("gpu1", "warning")]
        assert "MTU of 1400, the others' 1500" in mtu["message"]
        assert "ip link set dev eth0 mtu 1500" in mtu["fix"]
        limited = [p["mbps"] for p in report["pairs"] if "gpu2" in p["nodes"]]
        assert all(0 < mbps < 40 for mbps in limited), report["pairs"]  # 20 Mb/s allowed
        faults.fault(name, "gpu2", "heal")
        faults.fault(name, "gpu1", "heal")

        faults.fault(name, "gpu1", "block", peer="gpu2")
        done = check(sandbox)
        assert done.returncode == 1
        assert "gpu1 and gpu2 cannot connect to each other" in done.stderr
        assert "fix: allow TCP between gpu1 and gpu2" in done.stderr
        assert "Traceback" not in done.stderr
        # The launch uses that result (it is recent): the job is refused, naming the pair.
        launched = run_ugro(
            "--config", str(sandbox.cluster_file), "launch", "--name", "cut", *SHORT, timeout=300
        )
        assert launched.returncode == 1
        assert "refused: the network: gpu1 and gpu2 cannot connect" in launched.stderr
        assert "Traceback" not in launched.stderr
        jobs = Jobs(load_cluster_file(sandbox.cluster_file))
        record = jobs.find("cut")
        assert record.state == "failed" and "gpu1 and gpu2" in record.detail["reason"]
    finally:
        for node in ("gpu1", "gpu2"):
            faults.fault(name, node, "heal")
        # The next launches take the network as this check finds it, healed.
        assert check(sandbox).returncode == 0


def test_netcheck_of_a_node_that_is_down(sandbox) -> None:
    try:
        faults.fault(sandbox.name, "gpu2", "down")
        began = time.monotonic()
        done = check(sandbox, "--json")
        assert time.monotonic() - began < 15  # the others are not left waiting for it
        assert done.returncode == 1
        findings = report_of(done)["findings"]
        assert [f["subject"] for f in findings] == ["gpu2"]
        assert "could not be reached over SSH" in findings[0]["message"]
    finally:
        faults.fault(sandbox.name, "gpu2", "up")


def one_core_each(sandbox, tmp_path: Path) -> Path:
    """The sandbox's cluster with each node declaring one core: three nodes' ranks then share
    this machine's cores one thread each, instead of contending (an oversubscribed node's
    threads spin against each other, and a throttled node looked faster than its peers)."""
    data = yaml.safe_load(sandbox.cluster_file.read_text())
    for node in [data["cluster"]["master"], *data["workers"]]:
        node["hardware"] = {**(node.get("hardware") or {}), "cpu_cores": 1}
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_auto_balance_gives_a_slow_node_less(sandbox, tmp_path: Path) -> None:
    """No --balance on nodes that differ (gpu1 declares a memory budget): auto, gpu1 held to
    what it declares, and gpu2, slowed to a quarter of a core, given the least."""
    config = one_core_each(sandbox, tmp_path)
    data = yaml.safe_load(config.read_text())
    gpu1_node = next(w for w in data["workers"] if w["name"] == "gpu1")
    gpu1_node["hardware"]["vram_gb"] = 0.5  # the declared budget: now the nodes differ
    config.write_text(yaml.safe_dump(data))
    cluster = load_cluster_file(config)
    netcheck.cache_path(cluster, cluster.node_names).unlink(missing_ok=True)
    try:
        faults.fault(sandbox.name, "gpu2", "cpu", percent=25)
        done = run_ugro(
            "--config", str(config), "launch", "--name", "balanced", *SHORT, timeout=600
        )
    finally:
        faults.fault(sandbox.name, "gpu2", "cpu", percent=100)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # The launch checked the network first (no result was kept) and keeps what it found.
    assert netcheck.cache_path(cluster, cluster.node_names).is_file()
    assert "Batches (auto): a global batch of 12" in done.stderr
    for node in ("gpu-master", "gpu1", "gpu2"):
        assert f"  {node} rank " in done.stderr
    results = json.loads(run_ugro("--config", str(config), "results", "balanced", "--json").stdout)
    plan = {r["node"]: r for r in results["balance"]["ranks"]}
    shares = {node: r["micro_batch"] for node, r in plan.items()}
    assert results["balance"]["global_batch"] == 12
    assert sum(shares.values()) * results["balance"]["accumulation"] == 12
    assert results["balance"]["mode"] == "auto"
    said = "\n".join(line for line in done.stderr.splitlines() if " rank " in line)
    assert shares["gpu2"] < min(shares["gpu-master"], shares["gpu1"]), said
    assert plan["gpu2"]["samples_per_s"] < plan["gpu1"]["samples_per_s"], plan
    assert plan["gpu1"]["budget_source"] == "declared" and plan["gpu1"]["budget_gb"] == 0.5
    assert plan["gpu1"]["memory_gb"] <= 0.5
    # Each rank's tokens follow its share; each rank's idle time per step is reported.
    ranks = {r["node"]: r for r in results["ranks"]}
    assert ranks["gpu2"]["tokens"] < ranks["gpu1"]["tokens"]
    assert all("sync_s" in r for r in ranks.values())
    table = run_ugro("--config", str(config), "results", "balanced").stdout
    assert "idle s" in table and "batch" in table
    # The workers' collectives use the interface the check found towards the lead.
    job_dir = f"{sandbox.node('gpu1').home}/projects/UGRO/data/experiments/{results['job_id']}"
    script = ssh_as(sandbox, sandbox.node("gpu1"), "cat", f"{job_dir}/launch.sh").stdout
    assert "export GLOO_SOCKET_IFNAME=eth0" in script


def test_manual_balance_takes_each_nodes_micro_batch(sandbox, tmp_path: Path) -> None:
    plain = run_ugro(
        "--config", str(sandbox.cluster_file), "launch", "--name", "m", "--balance", "manual"
    )
    assert plain.returncode == 2
    assert "has no micro_batch_size" in plain.stderr and "gpu-master, gpu1, gpu2" in plain.stderr
    assert len(plain.stderr.strip().splitlines()) == 1

    data = yaml.safe_load(sandbox.cluster_file.read_text())
    data["cluster"]["master"]["micro_batch_size"] = 3
    sizes = {"gpu1": 2, "gpu2": 1}
    for worker in data["workers"]:
        worker["micro_batch_size"] = sizes[worker["name"]]
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump(data))

    manual = run_ugro(
        "--config",
        str(config),
        "launch",
        "--name",
        "manual",
        "--balance",
        "manual",
        *SHORT,
        timeout=600,
    )
    assert manual.returncode == 0, manual.stdout[-3000:] + manual.stderr[-3000:]
    assert "micro_batch_size in cluster.yaml" in manual.stderr
    plan = json.loads(run_ugro("--config", str(config), "results", "manual", "--json").stdout)[
        "balance"
    ]
    assert plan["mode"] == "manual"
    assert {r["node"]: r["micro_batch"] for r in plan["ranks"]} == {
        "gpu-master": 3,
        "gpu1": 2,
        "gpu2": 1,
    }
    assert plan["global_batch"] == 6
