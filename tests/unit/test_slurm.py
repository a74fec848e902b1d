"""Slurm's configuration from probe facts (golden files), the one-job-user check, what sinfo
says, and cluster.yaml's scheduler and slurm keys. The role that uses these runs for real in
tests/integration/test_slurm.py and the ugro_slurm molecule scenario.

Not through the ugro_filters module: importing Ansible in a test process patches sys.intern,
and torch._dynamo then fails to import in that process (docs/ARCHITECTURE.md, traps)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import SEED_CLUSTER
from ugro.config import load_cluster_file
from ugro.core.errors import ConfigError
from ugro.nodes.inventory import host_vars
from ugro.slurm.conf import files_from_facts, gpu_devices, parse_slurmd_c
from ugro.slurm.deploy import parse_sinfo
from ugro.slurm.users import uid_problems

GOLDEN = Path(__file__).parent / "golden" / "slurm"

# What each seed node would report: `slurmd -C` (the master a 24-thread desktop with one RTX
# 5070 Ti, the workers 8- and 6-core machines with one GPU each) and its /dev entries.
SEEN = {
    "gpu-master": {
        "hostname": "gpu-master.lan",
        "slurmd_c": "NodeName=gpu-master CPUs=24 Boards=1 SocketsPerBoard=1 CoresPerSocket=12 "
        "ThreadsPerCore=2 RealMemory=64215\nUpTime=3-02:11:09\n",
        "devices": ["/dev/nvidiactl", "/dev/nvidia0", "/dev/nvidia-uvm", "/dev/nvidia-modeset"],
    },
    "gpu1": {
        "hostname": "ob-desktop",
        "slurmd_c": "NodeName=ob-desktop CPUs=16 Boards=1 SocketsPerBoard=1 CoresPerSocket=8 "
        "ThreadsPerCore=2 RealMemory=31998\n",
        "devices": ["/dev/nvidia0", "/dev/nvidiactl"],
    },
    "gpu2": {
        "hostname": "ollie-pc",
        "slurmd_c": "NodeName=ollie-pc CPUs=12 Boards=1 SocketsPerBoard=1 CoresPerSocket=6 "
        "ThreadsPerCore=2 RealMemory=15911\n",
        "devices": ["/dev/nvidia1", "/dev/nvidia0"],
    },
}


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UGRO_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UGRO_UPDATE_GOLDEN=1"
    assert text == path.read_text()


@pytest.fixture
def seed(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("USER", "gpuadmin")
    monkeypatch.setenv("HOME", "/home/gpuadmin")
    return load_cluster_file(SEED_CLUSTER)


def seed_files(seed, hosts: list[str]) -> dict[str, str]:
    """What the role's ugro_slurm_files filter computes from the facts the role read."""
    settings = host_vars(seed, seed.master)["ugro_slurm"]
    addresses = {node.name: node.address for node in seed.nodes}
    return files_from_facts(
        SEEN, addresses, hosts=hosts, controller="gpu-master", settings=settings
    )


def test_slurm_conf_and_gres_conf_from_the_seed_clusters_facts(seed) -> None:
    files = seed_files(seed, seed.node_names)
    check_golden("slurm.conf", files["slurm.conf"])
    check_golden("gres.conf", files["gres.conf"])
    conf = files["slurm.conf"]
    # Memory a margin below what slurmd found, never above it (Slurm would mark the node
    # invalid); the machine's own hostname, so slurmd finds its line.
    assert "NodeName=gpu2 NodeHostname=ollie-pc NodeAddr=192.168.1.102" in conf
    assert "RealMemory=14887 " in conf and "Gres=gpu:2 " in conf
    assert "SlurmctldHost=gpu-master(192.168.1.100)" in conf
    assert "ProctrackType=proctrack/linuxproc" in conf


def test_the_master_that_does_not_train_still_names_the_controller(seed) -> None:
    conf = seed_files(seed, ["gpu1", "gpu2"])["slurm.conf"]
    assert "SlurmctldHost=gpu-master(" in conf
    assert "NodeName=gpu-master" not in conf and "Nodes=gpu1,gpu2 " in conf


def test_slurmd_c_parsed_and_refused_when_it_says_too_little() -> None:
    hostname, topology, memory = parse_slurmd_c(SEEN["gpu1"]["slurmd_c"])
    assert (hostname, topology["CPUs"], topology["ThreadsPerCore"], memory) == (
        "ob-desktop",
        16,
        2,
        31998,
    )
    with pytest.raises(ValueError, match="RealMemory"):
        parse_slurmd_c(
            "NodeName=x CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1"
        )
    with pytest.raises(ValueError, match="NodeName"):
        parse_slurmd_c("")


def test_gpu_devices_are_the_numbered_ones_in_index_order() -> None:
    assert gpu_devices(["/dev/nvidia10", "/dev/nvidiactl", "/dev/nvidia2", "/dev/nvidia-uvm"]) == (
        "/dev/nvidia2",
        "/dev/nvidia10",
    )


PASSWD = "ugro:x:{uid}:{uid}::/home/ugro:/bin/bash"


def test_one_uid_everywhere_passes() -> None:
    entries = {n: PASSWD.format(uid=1500) for n in ("gpu-master", "gpu1", "gpu2")}
    assert uid_problems("ugro", entries, "gpu-master") == []


def test_a_missing_user_and_a_different_uid_are_each_named_with_the_fix() -> None:
    entries = {
        "gpu-master": PASSWD.format(uid=1500),
        "gpu1": None,
        "gpu2": PASSWD.format(uid=1001),
    }
    problems = uid_problems("ugro", entries, "gpu-master")
    assert problems == [
        "gpu1: no user 'ugro' (UID 1500 on gpu-master); Slurm runs a job as one UID on every "
        "node: create it there with `useradd --uid 1500 ugro`",
        "gpu2: user 'ugro' has UID 1001, but 1500 on gpu-master; Slurm runs a job as one UID on "
        "every node: `usermod --uid 1500 ugro` there",
    ]
    assert uid_problems("ugro", {"gpu-master": None}, "gpu-master")[0].startswith(
        "gpu-master: no user 'ugro'"
    )


def test_sinfo_lines_and_which_states_take_jobs() -> None:
    states = parse_sinfo(
        "gpu-master|idle|gpu:1|none\ngpu1|down*|(null)|Not responding\n"
        "gpu2|drained|gpu:rtx3070:2(S:0)|disk full|really\ngarbage\n"
    )
    assert states["gpu-master"].takes_jobs and not states["gpu1"].takes_jobs
    assert states["gpu1"].reason == "Not responding"
    assert states["gpu2"].reason == "disk full|really" and not states["gpu2"].takes_jobs
    assert "garbage" not in states
    assert [states[n].gpus for n in ("gpu-master", "gpu1", "gpu2")] == [1, 0, 2]
    assert parse_sinfo("gpu1|mixed|(null)|none\n")["gpu1"].takes_jobs


def test_the_slurm_settings_default_to_the_masters_user(seed) -> None:
    assert seed.slurm.job_user == seed.master.user == "gpuadmin"
    assert seed.slurm.services == "systemd" and seed.scheduler == "ugro"


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ("scheduler: pbs\n", "scheduler"),
        ("slurm:\n  cluster_name: 9lives\n", "slurm.cluster_name"),
        ("slurm:\n  services: openrc\n", "slurm.services"),
        ("slurm:\n  partition: 'a b;rm'\n", "slurm.partition"),
        ("slurm:\n  job_user: '../x'\n", "slurm.job_user"),
        ("slurm:\n  memory_margin_mb: -1\n", "slurm.memory_margin_mb"),
    ],
)
def test_bad_slurm_keys_are_named(tmp_path: Path, extra: str, named: str) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(SEED_CLUSTER.read_text() + extra)
    with pytest.raises(ConfigError) as caught:
        load_cluster_file(path)
    assert named in str(caught.value) and "\n" not in str(caught.value)
