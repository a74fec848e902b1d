"""What `ugro netcheck` concludes from its agents' reports (ugro/network/): findings with
their fixes, the LoRA sync estimate, the cache a launch uses. The agents themselves run on the
sandbox (tests/integration/test_network.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.unit.conftest import master_and_workers
from ugro.config import load_cluster_file
from ugro.network import check as netcheck
from ugro.network import findings as netfindings


@pytest.fixture
def three(tmp_path: Path):
    return master_and_workers(tmp_path, [{}, {}])


def node(interface: str = "eth0", mtu: int = 1500, **extra) -> dict:
    return {
        "reached": True,
        "interface": interface,
        "mtu": mtu,
        "rendezvous": "ok",
        "problems": [],
        **extra,
    }


def report(nodes: dict, pairs: list[dict], **extra) -> dict:
    return {"lead": "m", "rendezvous_port": 29500, "nodes": nodes, "pairs": pairs, **extra}


def pair(a: str, b: str, mbps: float | None = 900.0, ok: bool = True, **extra) -> dict:
    return {"nodes": [a, b], "ok": ok, "mbps": mbps, "port": 40000, "error": None, **extra}


def test_a_healthy_network_has_no_findings() -> None:
    healthy = report(
        {"m": node("br0"), "w0": node(), "w1": node()},
        [pair("m", "w0"), pair("m", "w1"), pair("w0", "w1")],
    )
    assert netfindings.findings(healthy) == []


def test_a_slow_link_is_the_node_in_every_slow_pair() -> None:
    slow = report(
        {"m": node("br0"), "w0": node(), "w1": node("wlan0")},
        [pair("m", "w0", 940.0), pair("m", "w1", 20.0), pair("w0", "w1", 22.0)],
    )
    [finding] = netfindings.findings(slow)
    assert finding.subject == "w1" and finding.severity == "warning"
    assert "22 Mb/s at best, against 940 Mb/s" in finding.message
    assert "w1's wlan0" in finding.fix
    # Two nodes share one link: neither is the odd one out.
    two = report({"m": node("br0"), "w0": node()}, [pair("m", "w0", 5.0)])
    assert netfindings.findings(two) == []


def test_an_mtu_that_differs_is_named_with_the_command_that_fixes_it() -> None:
    odd = report(
        {"m": node("br0"), "w0": node(mtu=9000), "w1": node()},
        [pair("m", "w0"), pair("m", "w1"), pair("w0", "w1")],
    )
    [finding] = netfindings.findings(odd)
    assert finding.subject == "w0" and "MTU of 9000, the others' 1500" in finding.message
    assert "sudo ip link set dev eth0 mtu 1500" in finding.fix


def test_a_pair_that_cannot_connect_and_a_closed_rendezvous_port_are_errors() -> None:
    cut = report(
        {"m": node("br0"), "w0": node(), "w1": node(rendezvous="failed: timed out")},
        [pair("m", "w0"), pair("m", "w1"), pair("w0", "w1", None, ok=False, error="refused")],
    )
    found = {f.subject: f for f in netfindings.findings(cut)}
    assert found["w0-w1"].severity == "error"
    assert (
        "w0 and w1 cannot connect to each other on port 40000 (refused)" in found["w0-w1"].message
    )
    assert found["w1"].severity == "error"
    assert "cannot reach the rendezvous port 29500 on m" in found["w1"].message
    assert "communication.master_port" in found["w1"].fix


def test_an_unreached_node_is_the_only_finding() -> None:
    """The others were stopped waiting for it: what they saw is its consequence."""
    down = report(
        {
            "m": node("br0", problems=["a node left the check"]),
            "w0": node(),
            "w1": {"reached": False, "problems": ["ssh: connect to host 10.0.0.3: refused"]},
        },
        [pair("m", "w0"), pair("m", "w1", None, ok=False)],
    )
    [finding] = netfindings.findings(down)
    assert finding.subject == "w1" and "could not be reached over SSH: ssh: connect" in (
        finding.message
    )


def test_the_lora_sync_costs_what_the_sweep_measured(three, tmp_path: Path) -> None:
    sweep = [{"bytes": 4096, "seconds": 0.001, "algbw_gbps": 0.004, "busbw_gbps": 0.005}]
    measured = report({}, [], sweep=sweep, busbw_gbps=0.1)
    # No job yet: the price of 10 MB. 3 ranks: 2(n-1)/n of the bytes at the bus bandwidth.
    estimate = netfindings.lora_sync(three, measured, 3)
    assert estimate == {"seconds_per_10mb": pytest.approx(0.001 + 10e6 * 4 / 3 / 0.1e9, rel=1e-3)}
    job = three.paths.experiments / "j_20260101_000000"
    job.mkdir(parents=True)
    (job / "train_config.json").write_text(json.dumps({"trainable_parameters": 2_000_000}))
    estimate = netfindings.lora_sync(three, measured, 3)
    assert estimate["trainable_parameters"] == 2_000_000 and estimate["from_job"] == job.name
    assert estimate["seconds_per_step"] == pytest.approx(0.001 + 8e6 * 4 / 3 / 0.1e9, rel=1e-3)
    assert netfindings.lora_sync(three, report({}, []), 3) is None  # no sweep: no estimate


def test_a_launch_takes_a_recent_result_and_refuses_a_cut_pair(three) -> None:
    names = three.node_names
    path = netcheck.cache_path(three, names)
    cut = report(
        {"m": node("br0"), "w0": node(), "w1": node("enp3s0")},
        [pair("m", "w0"), pair("m", "w1"), pair("w0", "w1", None, ok=False, error="timed out")],
        key=netcheck.cache_key(three, names),
        checked_at=time.time(),
    )
    cut["findings"] = [f.__dict__ for f in netfindings.findings(cut)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cut))
    interfaces, refusal = netcheck.preflight(three, names)
    assert interfaces == {"m": "br0", "w0": "eth0", "w1": "enp3s0"}
    assert refusal is not None and refusal.startswith("w0 and w1 cannot connect")
    assert "fix: allow TCP between w0 and w1" in refusal
    # Another set of nodes, or an old result, is not this one.
    assert netcheck.cached(three, names[:2], 3600) is None
    cut["checked_at"] = time.time() - 7200
    path.write_text(json.dumps(cut))
    assert netcheck.cached(three, names, 3600) is None
    # One node: no network to check.
    assert netcheck.preflight(three, names[:1]) == ({}, None)


def test_a_check_of_more_nodes_serves_a_job_on_some_of_them(three) -> None:
    """Same lead, a superset, recent: its pairs among the job's nodes were tested."""
    names = three.node_names
    every = report(
        {"m": node("br0"), "w0": node(), "w1": node("enp3s0")},
        [pair("m", "w0"), pair("m", "w1"), pair("w0", "w1", None, ok=False, error="timed out")],
        key=netcheck.cache_key(three, names),
        checked_at=time.time(),
    )
    every["findings"] = [f.__dict__ for f in netfindings.findings(every)]
    path = netcheck.cache_path(three, names)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(every))
    narrowed = netcheck.covering(three, ["m", "w1"], 3600)
    assert narrowed is not None and set(narrowed["nodes"]) == {"m", "w1"}
    assert narrowed["findings"] == []  # the cut pair is not this job's
    assert netcheck.preflight(three, ["m", "w1"]) == ({"m": "br0", "w1": "enp3s0"}, None)
    # Another lead, or nodes it did not check, are not served by it.
    assert netcheck.covering(three, ["w0", "w1"], 3600) is None
    # A node whose address changed since: not the same network.
    moved = load_cluster_file(
        _moved(three.source, "10.0.0.2", "10.0.0.9"),
    )
    assert netcheck.covering(moved, ["m", "w0"], 3600) is None


def _moved(source, old: str, new: str) -> Path:
    text = Path(source).read_text().replace(old, new)
    path = Path(source).with_name("moved.yaml")
    path.write_text(text)
    return path
