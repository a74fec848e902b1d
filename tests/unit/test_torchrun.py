"""Each node's torchrun command (ugro.torchrun) and the launch.sh the role renders around it,
pinned by golden files.

Regenerate after an intended change with `UGRO_UPDATE_GOLDEN=1 pytest tests/unit/test_torchrun.py`
and review the diff.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, SEED_CLUSTER
from ugro.config import load_cluster_file
from ugro.launch.torchrun import node_plan, torchrun_command
from ugro.nodes.inventory import host_vars

GOLDEN = Path(__file__).parent / "golden"
JOB_ID = "exp1_20261129_101010"
HOSTILE_ARG = "$(rm -rf ~) 'quoted' `x`"

# What the health role reports (a stand-in for what the probe found on each node: one RTX 5070
# Ti on the master, CPU-only workers).
REPORTS = {
    "gpu-master": {
        "effective_accelerator": "cuda",
        "env": {"device_count": 1},
        "cpus_usable": 24,
        "interface": "enp5s0",
        "free_port": 29500,
    },
    "gpu1": {"effective_accelerator": "cpu", "cpus_usable": 22, "interface": "eno1"},
    "gpu2": {"effective_accelerator": "cpu", "cpus_usable": 16, "interface": "wlp3s0"},
}


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UGRO_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UGRO_UPDATE_GOLDEN=1"
    assert text == path.read_text()


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("USER", "gpuadmin")
    monkeypatch.setenv("HOME", "/home/gpuadmin")
    return load_cluster_file(SEED_CLUSTER)


def request_for(cluster, name: str, backend: str) -> dict:
    """The request the launch role hands the ugro_launch_plan filter, from the inventory."""
    variables = host_vars(cluster, cluster.node(name))
    return {
        "host": name,
        "hosts": cluster.node_names,
        "python": variables["ugro_python"],
        "address": variables["ugro_address"],
        "nproc_per_node": variables.get("ugro_nproc_per_node"),
        "master_addr": variables["ugro_master_addr"],
        "port": REPORTS["gpu-master"]["free_port"],
        "backend": backend,
        "join_timeout": variables["ugro_dist_timeout_seconds"],
        "max_restarts": variables["ugro_max_restarts"],
        "job_id": JOB_ID,
        "job_dir": f"{variables['ugro_experiments_path']}/{JOB_ID}",
        "script": "scripts/train_production.py",
        "args": ["--epochs", "1", HOSTILE_ARG],
    }


@pytest.mark.parametrize("backend", ["c10d", "static"])
def test_each_nodes_command_golden(cluster, backend: str) -> None:
    plans = {
        name: node_plan(REPORTS[name], request_for(cluster, name, backend))
        for name in cluster.node_names
    }
    check_golden(f"torchrun_{backend}.json", json.dumps(plans, indent=2, sort_keys=True) + "\n")
    assert plans["gpu-master"]["nproc"] == 1 and plans["gpu1"]["nproc"] == 1
    assert plans["gpu1"]["threads"] == 22 and plans["gpu2"]["threads"] == 16
    assert [p["node_rank"] for p in plans.values()] == [0, 1, 2]


def test_rendezvous_options() -> None:
    common = {
        "python": "python",
        "nnodes": 2,
        "nproc_per_node": 1,
        "master_addr": "fd00::1",
        "port": 29500,
        "job_id": JOB_ID,
        "join_timeout": 60,
        "max_restarts": 0,
        "local_addr": "fd00::2",
        "job_dir": "/j",
        "script": "s.py",
    }
    c10d = torchrun_command(**common, backend="c10d", node_rank=1)
    assert c10d[c10d.index("--rdzv-endpoint") + 1] == "[fd00::1]:29500"  # IPv6 in brackets
    assert c10d[c10d.index("--rdzv-conf") + 1] == "is_host=0,join_timeout=60"
    assert "--node-rank" not in c10d
    static = torchrun_command(**common, backend="static", node_rank=1)
    assert static[static.index("--node-rank") + 1] == "1"
    assert static[static.index("--rdzv-conf") + 1] == "timeout=60"
    with pytest.raises(ValueError, match="rendezvous backend 'etcd'"):
        torchrun_command(**common, backend="etcd", node_rank=0)


def test_an_override_of_ranks_per_node_wins(cluster) -> None:
    request = {**request_for(cluster, "gpu-master", "c10d"), "nproc_per_node": "2"}
    assert node_plan(REPORTS["gpu-master"], request)["nproc"] == 2


def test_declared_cores_cap_the_ranks_threads(cluster) -> None:
    """hardware.cpu_cores below what the node's affinity allows (SMT, or sandbox nodes sharing
    a machine) is what its ranks' threads share; above it, the node's own count wins."""
    report = {**REPORTS["gpu-master"], "cpus_usable": 8, "effective_accelerator": "cpu"}
    request = request_for(cluster, "gpu-master", "c10d")
    assert node_plan(report, request)["threads"] == 8
    assert node_plan(report, {**request, "cpu_cores": "2"})["threads"] == 2
    assert node_plan(report, {**request, "cpu_cores": "32"})["threads"] == 8
    assert node_plan(report, {**request, "cpu_cores": "4", "nproc_per_node": "2"})["threads"] == 2


def render_launch_script(cluster, name: str) -> str:
    """templates/launch.sh.j2 rendered by Ansible's own templar, with what the role sets."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    plan = node_plan(REPORTS[name], request_for(cluster, name, "c10d"))
    variables = {
        **host_vars(cluster, cluster.node(name)),
        "ansible_managed": "Ansible managed",
        "inventory_hostname": name,
        "ugro_job_id": JOB_ID,
        "ugro_launch_job_dir": f"{cluster.node(name).experiments_path}/{JOB_ID}",
        "ugro_launch_nproc": plan["nproc"],
        "ugro_launch_threads": plan["threads"],
        "ugro_launch_attempt": 1,
        "ugro_launch_balance": "equal",
        "ugro_launch_lead": cluster.master.name,
        "ugro_launch_interface": plan["interface"],
        "ugro_launch_command": plan["command"],
    }
    templar = Templar(loader=DataLoader(), variables=variables)
    text = (REPO / "templates" / "launch.sh.j2").read_text()
    return str(templar.template(trust_as_template(text)))


def test_the_rendered_launch_script_golden(cluster, tmp_path: Path) -> None:
    script = render_launch_script(cluster, "gpu1")
    check_golden("launch_gpu1.sh", script)
    path = tmp_path / "launch.sh"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)], check=False).returncode == 0
    # The exec line is exactly the command, every argument one word, the hostile one inert.
    exec_line = next(line for line in script.splitlines() if line.startswith("exec "))
    plan = node_plan(REPORTS["gpu1"], request_for(cluster, "gpu1", "c10d"))
    assert shlex.split(exec_line)[1:] == plan["command"]
    assert shlex.split(exec_line)[-1] == HOSTILE_ARG
