"""The node probe (roles/ugro_health/module_utils/ugro_probe.py), run for real on this machine.

This machine has no GPU. Where a test needs one, a stand-in `nvidia-smi` script prints what a
real one prints on the reference cluster's RTX 5070 Ti; it is named as a stand-in below.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ugro.nodes import scripts

PROBE = scripts.PROBE.file
probe = scripts.load(scripts.PROBE, "ugro_probe")

GPU_CSV = "0, NVIDIA GeForce RTX 5070 Ti, 12227, 11800, 575.57.08, 12.0, 3, 41\n"


def standin_nvidia_smi(tmp_path: Path) -> Path:
    """GPU stand-in: a script that answers like nvidia-smi on an RTX 5070 Ti (no GPU here)."""
    script = tmp_path / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        f"  --query-gpu=*) printf '{GPU_CSV.strip()}\\n' ;;\n"
        "  *) echo '| NVIDIA-SMI 575.57.08    Driver Version: 575.57.08    CUDA Version: 12.9 |' ;;\n"
        "esac\n"
    )
    script.chmod(0o755)
    return script


def run_probe(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(PROBE), *args], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(done.stdout)


def test_parse_gpu_csv() -> None:
    (gpu,) = probe.parse_gpu_csv(GPU_CSV)
    assert gpu["name"] == "NVIDIA GeForce RTX 5070 Ti"
    assert gpu["vram_total_mb"] == 12227
    assert gpu["compute_capability"] == "12.0"
    assert probe.parse_gpu_csv("garbage line\n") == []


@pytest.mark.parametrize(
    ("arch_list", "capability", "covered"),
    [
        (["sm_80", "sm_86", "sm_90"], "8.9", True),  # sm_86 cubins run on 8.9
        (["sm_80", "sm_86", "sm_90"], "12.0", False),  # the RTX 5070 Ti needs a CUDA 12.8+ build
        (["sm_90", "sm_100", "sm_120"], "12.0", True),
        (["sm_80", "compute_90"], "12.0", True),  # PTX is compiled at load time for newer GPUs
        (["sm_90a"], "9.0", True),
        (["sm_90a"], "9.1", False),
        (["sm_75"], "8.6", False),
        ([], "8.6", False),
        (["sm_86"], "", None),
    ],
)
def test_arch_coverage(arch_list: list[str], capability: str, covered: bool | None) -> None:
    assert probe.arch_covers(arch_list, capability) is covered


@pytest.mark.usefixtures("needs_torch")
def test_cpu_node_is_healthy_with_this_python(tmp_path: Path) -> None:
    report = run_probe(
        "--python",
        sys.executable,
        "--accelerator",
        "cpu",
        "--project-path",
        str(tmp_path / "not" / "made" / "yet"),
    )
    assert report["healthy"], report["problems"]
    assert report["disk_path"] == str(tmp_path)
    assert report["env"]["torch_version"].startswith("2.")
    assert report["cpus"] >= 1 and report["ram_total_gb"] > 0


@pytest.mark.usefixtures("needs_torch")
def test_cuda_node_without_gpu_is_unhealthy(tmp_path: Path) -> None:
    report = run_probe(
        "--python",
        sys.executable,
        "--accelerator",
        "cuda",
        "--project-path",
        str(tmp_path),
        "--nvidia-smi",
        "no-such-nvidia-smi",
    )
    assert not report["healthy"]
    assert any("no GPU: nvidia-smi not found" in p for p in report["problems"])


def test_missing_environment_is_named(tmp_path: Path) -> None:
    report = run_probe(
        "--python", str(tmp_path / "env" / "bin" / "python"), "--project-path", str(tmp_path)
    )
    assert not report["healthy"]
    assert report["problems"] == [
        f"environment interpreter {tmp_path}/env/bin/python not found (has it been synced?)"
    ]


@pytest.mark.usefixtures("needs_torch")
def test_gpu_standin_with_cpu_torch_is_unhealthy(tmp_path: Path) -> None:
    report = run_probe(
        "--python",
        sys.executable,
        "--accelerator",
        "auto",
        "--project-path",
        str(tmp_path),
        "--nvidia-smi",
        str(standin_nvidia_smi(tmp_path)),
    )
    assert report["effective_accelerator"] == "cuda"
    assert report["gpus"][0]["name"] == "NVIDIA GeForce RTX 5070 Ti"
    assert report["driver_version"] == "575.57.08"
    assert report["cuda_driver_version"] == "12.9"
    assert not report["healthy"]
    assert any("CPU-only build" in p for p in report["problems"])


def test_judge_reports_uncovered_arch() -> None:
    report = {"problems": [], "gpus": probe.parse_gpu_csv(GPU_CSV), "nvidia_smi": "ok"}
    env = {
        "torch_version": "2.1.0+cu121",
        "cuda_build": "12.1",
        "cuda_available": True,
        "arch_list": ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"],
    }
    probe.judge(report, env, "cuda")
    assert report["arch_coverage"] == [{"gpu": 0, "capability": "12.0", "covered": False}]
    assert "has no kernels for GPU 0 NVIDIA GeForce RTX 5070 Ti (sm_120)" in report["problems"][0]


# --- the torch-facts cache ----------------------------------------------------------------------


def probe_env(tmp_path: Path, *extra: str) -> dict:
    """The probe against this interpreter, with its own cache and an extra sys.path directory."""
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    command = [sys.executable, str(PROBE), "--python", sys.executable, "--accelerator", "cpu"]
    command += ["--project-path", str(tmp_path), "--torch-cache-dir", str(tmp_path / "cache")]
    done = subprocess.run(
        [*command, *extra],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=env,
    )
    return json.loads(done.stdout)


def test_torch_facts_are_reused_until_the_environment_changes(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    first = probe_env(tmp_path)
    assert "cached_since" not in first["env"], "nothing cached yet: torch must be imported"
    second = probe_env(tmp_path)
    assert second["env"].pop("cached_since")
    assert second["env"] == first["env"] and second["healthy"]
    # A package installed into a directory on the environment's sys.path.
    (tmp_path / "site" / "newpkg").mkdir()
    assert "cached_since" not in probe_env(tmp_path)["env"]
    assert "cached_since" in probe_env(tmp_path)["env"]
    # --deep imports regardless (and leaves a fresh entry).
    assert "cached_since" not in probe_env(tmp_path, "--deep")["env"]
    assert "cached_since" in probe_env(tmp_path)["env"]


def test_a_gpu_change_invalidates_the_torch_facts(tmp_path: Path) -> None:
    """GPU stand-in: nvidia-smi scripts (no GPU here) that list different cards."""
    (tmp_path / "site").mkdir()
    smi = str(standin_nvidia_smi(tmp_path))
    assert "cached_since" not in probe_env(tmp_path, "--nvidia-smi", smi)["env"]
    assert "cached_since" in probe_env(tmp_path, "--nvidia-smi", smi)["env"]
    script = Path(smi)
    script.write_text(script.read_text().replace("RTX 5070 Ti", "RTX 4070"))
    assert "cached_since" not in probe_env(tmp_path, "--nvidia-smi", smi)["env"]


def test_torch_cache_off_damaged_or_too_old(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    probe_env(tmp_path, "--torch-cache-ttl", "0")
    assert not (tmp_path / "cache").exists(), "a TTL of 0 must not write a cache"
    probe_env(tmp_path)
    (entry,) = (tmp_path / "cache").glob("torch-facts-*.json")
    assert entry.stat().st_mode & 0o077 == 0
    data = json.loads(entry.read_text())
    entry.write_text(json.dumps({**data, "checked_at": data["checked_at"] - 7200}))
    assert "cached_since" not in probe_env(tmp_path)["env"], "older than the TTL"
    entry.write_text("{torn")
    assert "cached_since" not in probe_env(tmp_path)["env"]
    assert "cached_since" in probe_env(tmp_path)["env"]


def test_a_broken_environment_is_not_cached(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "torch.py").write_text("raise ImportError('libtorch_cpu.so: not found')\n")
    for _ in range(2):
        report = probe_env(tmp_path)
        assert not report["healthy"]
        assert "libtorch_cpu.so" in report["env"]["torch_error"]
    assert not list((tmp_path / "cache").glob("torch-facts-*.json"))


def test_each_interpreter_path_has_its_own_entry(tmp_path: Path) -> None:
    """Two venvs' bin/python resolve to one base interpreter; their facts must not mix."""
    args = probe.argparse.Namespace(torch_cache_dir=str(tmp_path), torch_cache_ttl=60.0)
    gpus = {"gpus": [], "driver_version": None, "cuda_driver_version": None, "nvidia_smi": None}
    paths = set()
    for venv in ("a", "b"):
        (tmp_path / venv / "bin").mkdir(parents=True)
        (tmp_path / venv / "bin" / "python").symlink_to(sys.executable)
        args.python = str(tmp_path / venv / "bin" / "python")
        paths.add(probe.TorchCache.from_args(args, gpus).path)
    assert len(paths) == 2


# Runs inside a private network and mount namespace (unshare): an interface (one end of a veth
# pair: this kernel has no dummy links) with an IPv4
# and an IPv6 address, and an /etc/hosts of the test's own bound over the real one.
_IN_NAMESPACE = """
set -e
ip link set lo up
ip link add ugrotest0 type veth peer name ugrotest1
ip link set ugrotest0 up
ip link set ugrotest1 up
ip addr add 10.77.0.5/24 dev ugrotest0
ip -6 addr add fd00:77::5/64 dev ugrotest0 nodad
mount --bind "$1" /etc/hosts
exec "$2" "$3"
"""
_ASK = """
import json, sys
sys.path.insert(0, sys.argv[1])  # the probe's module_utils: it imports its sibling
import ugro_probe as probe
names = ["10.77.0.5", "fd00:77::5", "gpu-v6", "gpu-v4", "::1", "localhost", "10.77.0.9", "nohost"]
print(json.dumps({"interfaces": {n: probe.interface_for(n) for n in names},
                  "v6_port": probe.free_port("fd00:77::5", 29500),
                  "name_port": probe.free_port("gpu-v6", 29500)}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="a private network namespace needs root")
def test_the_interface_is_found_for_ipv6_and_host_names(tmp_path: Path) -> None:
    """A worker's `ip:` may be an IPv6 address or a host name: the probe finds the interface
    that holds it on the node (not only IPv4 literals), preferring a real one over loopback."""
    hosts = tmp_path / "hosts"
    # gpu-v4 resolves to loopback first, as Debian's 127.0.1.1 line makes a host's own name do.
    hosts.write_text(
        "127.0.0.1 localhost\n::1 localhost\n127.0.1.1 gpu-v4\n10.77.0.5 gpu-v4\n"
        "fd00:77::5 gpu-v6\n"
    )
    ask = tmp_path / "ask.py"
    ask.write_text(_ASK.replace("sys.argv[1]", repr(str(PROBE.parent))))
    done = subprocess.run(
        [
            "unshare",
            "--net",
            "--mount",
            "bash",
            "-c",
            _IN_NAMESPACE,
            "-",
            str(hosts),
            sys.executable,
            str(ask),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["interfaces"] == {
        "10.77.0.5": "ugrotest0",
        "fd00:77::5": "ugrotest0",
        "gpu-v6": "ugrotest0",
        "gpu-v4": "ugrotest0",
        "::1": "lo",
        "localhost": "lo",
        "10.77.0.9": None,
        "nohost": None,
    }
    assert found["v6_port"] == 29500 and found["name_port"] == 29500
