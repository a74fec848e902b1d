"""`ugro health` end to end: real playbooks through ansible-runner, on this machine and the sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, SEED_CLUSTER, run_ugro
from tests.integration.conftest import ssh_as
from ugro.sandbox import faults


def health_json(*args: str, cwd: Path | None = None, env: dict | None = None) -> tuple[int, dict]:
    done = run_ugro(*args, "health", "--json", cwd=cwd, env=env)
    assert "Traceback" not in done.stderr
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


# --- the built-in local cluster -----------------------------------------------------------------


def test_local_cluster_is_healthy_and_recorded(tmp_path: Path) -> None:
    home = tmp_path / "ugro-home"
    rc, summary = health_json(cwd=tmp_path, env={"UGRO_HOME": str(home)})
    assert rc == 0, summary
    node = summary["nodes"]["local"]
    assert node["status"] == "healthy"
    assert node["report"]["env"]["executable"] == sys.executable
    state = json.loads((home / "data" / "cluster_state.json").read_text())
    assert state["nodes"]["local"]["status"] == "healthy"
    assert "local rank=0 healthy" in (home / "logs" / "health.log").read_text()
    assert (home / "logs" / "agent.log").stat().st_size > 0
    status = run_ugro("status", cwd=tmp_path, env={"UGRO_HOME": str(home)})
    assert status.returncode == 0 and "healthy" in status.stdout


def test_cuda_node_without_a_gpu_is_unhealthy(tmp_path: Path) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cluster": {
                    "name": "one-gpu-box",
                    "master": {
                        "hostname": "box",
                        "ip": "127.0.0.1",
                        "user": "root",
                        "accelerator": "cuda",
                    },
                },
                "paths": {"project_root": str(tmp_path / "project")},
                "environment": {"manager": "system"},
            }
        )
    )
    rc, summary = health_json("--config", str(config))
    assert rc == 1
    node = summary["nodes"]["box"]
    assert node["status"] == "unhealthy"
    assert "no GPU: nvidia-smi not found" in node["message"]


def test_ugro_run_health_is_ugro_health(tmp_path: Path) -> None:
    """One path per verb: `ugro run health` records the verdicts as `ugro health` does, and
    passes -e variables to the playbook."""
    home = tmp_path / "h"
    done = run_ugro(
        "run",
        "health",
        "-e",
        "ugro_health_min_free_disk_gb=1000000",
        cwd=tmp_path,
        env={"UGRO_HOME": str(home)},
    )
    assert done.returncode == 1, done.stderr
    state = json.loads((home / "data" / "cluster_state.json").read_text())
    assert state["nodes"]["local"]["status"] == "unhealthy"
    assert "GB free" in state["nodes"]["local"]["message"]  # the -e threshold was applied
    done = run_ugro("run", "health", cwd=tmp_path, env={"UGRO_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    assert "healthy" in done.stdout
    run = max((home / "data" / "runs").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    (status,) = run.glob("artifacts/*/status")
    assert status.read_text() == "successful"


# --- inventory agreement ----------------------------------------------------------------------


def _unwrap(value):
    """ansible-inventory marks inventory strings as untrusted: {'__ansible_unsafe': 'x'}."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def ansible_inventory(config: Path) -> dict:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-inventory"), "--list"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "UGRO_CONFIG": str(config)},
    )
    assert done.returncode == 0, done.stderr
    listing = _unwrap(json.loads(done.stdout))
    listing["_meta"].pop("profile", None)
    return listing


def ugro_inventory(config: Path) -> dict:
    done = run_ugro("--config", str(config), "inventory", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_ugro_inventory_agrees_with_ansible_inventory() -> None:
    theirs, ours = ansible_inventory(SEED_CLUSTER), ugro_inventory(SEED_CLUSTER)
    # The local master runs modules under the controller's interpreter, which each process names
    # by its own path (python vs python3.11): the same file.
    for listing in (theirs, ours):
        master = listing["_meta"]["hostvars"]["gpu-master"]
        master["ansible_python_interpreter"] = os.path.realpath(
            master["ansible_python_interpreter"]
        )
    assert theirs["_meta"] == ours["_meta"]
    for group in ("master", "workers"):
        assert theirs[group]["hosts"] == ours[group]["hosts"]
    assert set(theirs["nodes"]["children"]) == set(ours["nodes"]["children"])


def test_inventory_follows_edits_of_cluster_yaml(tmp_path: Path) -> None:
    config = tmp_path / "cluster.yaml"
    data = yaml.safe_load(SEED_CLUSTER.read_text())
    config.write_text(yaml.safe_dump(data))
    assert "gpu3" not in ansible_inventory(config)["_meta"]["hostvars"]
    data["workers"].append(
        {**data["workers"][1], "name": "gpu3", "hostname": "gpu3", "ip": "192.168.1.103", "rank": 3}
    )
    data["ssh"] = {"connect_timeout": 9}
    config.write_text(yaml.safe_dump(data))
    hostvars = ansible_inventory(config)["_meta"]["hostvars"]
    assert hostvars["gpu3"]["ugro_rank"] == 3
    assert hostvars["gpu1"]["ansible_ssh_timeout"] == 9


def test_a_bad_cluster_yaml_fails_ansible_loudly(tmp_path: Path) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text("cluster:\n  master: {hostname: a, ip: 10.0.0.1, user: 'x y'}\n")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-inventory"), "--list"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "UGRO_CONFIG": str(config)},
        check=False,
    )
    assert done.returncode != 0
    assert "cluster.master.user: 'x y' is not a valid user name" in done.stderr


# --- the sandbox --------------------------------------------------------------------------------


@pytest.mark.sandbox
def test_sandbox_all_healthy_with_the_users_own_paths(sandbox) -> None:
    rc, summary = health_json("--config", str(sandbox.cluster_file))
    assert rc == 0, summary
    nodes = summary["nodes"]
    assert sorted(nodes) == ["gpu-master", *(n.name for n in sandbox.nodes)]
    for plan in sandbox.nodes:
        report = nodes[plan.name]["report"]
        assert nodes[plan.name]["status"] == "healthy"
        assert report["hostname"] == plan.hostname  # probed on the node itself
        assert report["disk_path"].startswith(plan.home)
        assert report["env"]["executable"] == f"{sandbox.env_dir}/bin/python"
    assert summary["drift"] == []


@pytest.mark.sandbox
def test_sandbox_torch_facts_come_from_each_nodes_cache_until_deep(sandbox) -> None:
    names = ["gpu-master", *(n.name for n in sandbox.nodes)]

    def cached(*options: str) -> dict[str, bool]:
        done = run_ugro("--config", str(sandbox.cluster_file), "health", "--json", *options)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr
        nodes = json.loads(done.stdout)["nodes"]
        return {name: "cached_since" in nodes[name]["report"]["env"] for name in names}

    assert cached("--deep") == dict.fromkeys(names, False), "--deep imports torch everywhere"
    assert cached() == dict.fromkeys(names, True)
    # Each node keeps its own entry, under its own user's home.
    for plan in sandbox.nodes:
        listing = ssh_as(sandbox, plan, "ls", f"{plan.home}/.cache/ugro")
        assert listing.returncode == 0, listing.stderr
        assert "torch-facts-" in listing.stdout


@pytest.mark.sandbox
def test_sandbox_node_down_is_unreachable_within_the_timeout(sandbox) -> None:
    victim = sandbox.nodes[-1]
    faults.fault(sandbox.name, victim.name, "down")
    try:
        started = time.monotonic()
        rc, summary = health_json("--config", str(sandbox.cluster_file))
        elapsed = time.monotonic() - started
    finally:
        faults.fault(sandbox.name, victim.name, "up")
    assert rc == 1
    statuses = {name: node["status"] for name, node in summary["nodes"].items()}
    assert statuses.pop(victim.name) == "unreachable"
    assert set(statuses.values()) == {"healthy"}
    # A fresh connection is refused; one Ansible's ControlPersist master still held finds its
    # peer gone (a broken pipe): both are the node's sshd gone, said in ssh's words.
    said = summary["nodes"][victim.name]["message"]
    assert "Connection refused" in said or "Broken pipe" in said, said
    assert elapsed < 60


@pytest.mark.sandbox
def test_sandbox_partitioned_node_does_not_hang_the_run(sandbox) -> None:
    victim = sandbox.nodes[0]
    faults.fault(sandbox.name, victim.name, "partition")
    try:
        started = time.monotonic()
        rc, summary = health_json(
            "--config",
            str(sandbox.cluster_file),
        )
        elapsed = time.monotonic() - started
    finally:
        faults.fault(sandbox.name, victim.name, "heal")
    assert rc == 1
    assert summary["nodes"][victim.name]["status"] == "unreachable"
    assert "timed out" in summary["nodes"][victim.name]["message"]
    # 5 s connect timeout (plus a stale control connection's keepalive), never ansible's defaults.
    assert elapsed < 60


@pytest.mark.sandbox
def test_ansible_playbook_runs_directly_against_the_sandbox(sandbox) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "playbooks/health.yml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "UGRO_CONFIG": str(sandbox.cluster_file)},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    recap = done.stdout.split("PLAY RECAP", 1)[1]
    for name in ["gpu-master", *(n.name for n in sandbox.nodes)]:
        assert name in recap
    assert "failed=0" in recap and "unreachable=1" not in recap


# --- addresses, host keys and the run's environment -------------------------------------------


def local_cluster_file(tmp_path: Path, **master: object) -> Path:
    """A one-node cluster on this machine, as a user would write it."""
    config = tmp_path / "cluster.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cluster": {
                    "name": "box",
                    "master": {"hostname": "box", "ip": "127.0.0.1", "user": "root", **master},
                },
                "paths": {"project_root": str(tmp_path / "project")},
                "environment": {"manager": "system"},
            }
        )
    )
    return config


@pytest.mark.parametrize("address", ["::1", "localhost"])
def test_a_node_addressed_by_ipv6_or_a_host_name_is_healthy(tmp_path: Path, address: str) -> None:
    rc, summary = health_json("--config", str(local_cluster_file(tmp_path, ip=address)))
    assert rc == 0, summary["nodes"]["box"]["message"]
    assert summary["nodes"]["box"]["report"]["interface"] == "lo"


def test_playbooks_run_from_any_directory(tmp_path: Path) -> None:
    """Plain `ansible-playbook` from elsewhere, no ansible.cfg: the playbook finds ugro's roles
    and plugins beside it; the inventory is named with -i."""
    env = {k: v for k, v in os.environ.items() if k != "ANSIBLE_CONFIG"}
    env["UGRO_CONFIG"] = str(local_cluster_file(tmp_path))
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(REPO / "inventory" / "ugro.yml"),
            str(REPO / "playbooks" / "health.yml"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert "box" in done.stdout.split("PLAY RECAP", 1)[1]


def test_ugro_run_keeps_this_process_environment_and_hides_secrets(tmp_path: Path) -> None:
    """A vaulted playbook runs through `ugro run` (ANSIBLE_VAULT_PASSWORD_FILE reaches Ansible:
    it names a file, it is not the secret), while HF_TOKEN's value reaches no artifact."""
    password = tmp_path / "vault-pass"
    password.write_text("correct horse\n")
    secrets_file = tmp_path / "secrets.yml"
    secrets_file.write_text("greeting: hello from the vault\n")
    ansible_vault = str(Path(sys.executable).parent / "ansible-vault")
    subprocess.run(
        [ansible_vault, "encrypt", "--vault-password-file", str(password), str(secrets_file)],
        check=True,
        capture_output=True,
    )
    playbook = tmp_path / "vaulted.yml"
    playbook.write_text(
        "- name: Vaulted\n  hosts: nodes\n  gather_facts: false\n"
        f"  vars_files: [{secrets_file}]\n"
        "  tasks:\n    - name: Say it\n      ansible.builtin.assert:\n"
        "        that: greeting == 'hello from the vault'\n"
    )
    canary = "hf_canary_" + os.urandom(6).hex()
    done = run_ugro(
        "--config",
        str(local_cluster_file(tmp_path)),
        "run",
        str(playbook),
        env={"ANSIBLE_VAULT_PASSWORD_FILE": str(password), "HF_TOKEN": canary},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert "box: ok" in done.stdout
    runs = tmp_path / "project" / "data" / "runs"
    leaks = [p for p in runs.rglob("*") if p.is_file() and canary.encode() in p.read_bytes()]
    assert leaks == []


def test_the_logging_section_is_obeyed(tmp_path: Path) -> None:
    config = local_cluster_file(tmp_path)
    data = yaml.safe_load(config.read_text())
    log_file = tmp_path / "elsewhere" / "ugro.log"
    data["logging"] = {
        "level": "INFO",
        "format": "UGRO|%(levelname)s|%(message)s",
        "file": str(log_file),
    }
    config.write_text(yaml.safe_dump(data))
    rc, _ = health_json("--config", str(config))
    assert rc == 0
    lines = log_file.read_text().splitlines()
    assert lines and all(line.startswith("UGRO|") for line in lines)
    assert not [line for line in lines if line.startswith("UGRO|DEBUG|")]
    assert any("box rank=0 healthy" in line for line in lines)
    logs = tmp_path / "project" / "logs"
    assert not (logs / "agent.log").exists()  # logging.file replaces it
    assert (logs / "health.log").read_text().startswith("UGRO|INFO|")


@pytest.mark.sandbox
def test_sandbox_host_keys_are_checked_through_ugro(sandbox, tmp_path: Path) -> None:
    """ansible-runner turns host-key checking off unless told otherwise: a node whose key is
    not known must be refused, not trusted on first use."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    config = tmp_path / "cluster.yaml"
    data = yaml.safe_load(sandbox.cluster_file.read_text())
    data["ssh"]["known_hosts"] = str(empty)
    config.write_text(yaml.safe_dump(data))
    # A fresh control-socket directory: a connection that earlier tests opened (and verified)
    # would otherwise be reused without a new key check.
    fresh = {"ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path / "cp")}
    rc, summary = health_json("--config", str(config), env=fresh)
    assert rc == 1
    for plan in sandbox.nodes:
        node = summary["nodes"][plan.name]
        assert node["status"] == "unreachable"
        assert f"{plan.name} ({plan.address}) has no known host key" in node["message"]
        assert f"`ugro node rekey {plan.name}`" in node["message"]
    assert empty.read_text() == ""  # nothing was learned on first use


@pytest.mark.sandbox
def test_sandbox_known_hosts_in_a_path_with_a_space(sandbox, tmp_path: Path) -> None:
    folder = tmp_path / "my keys"
    folder.mkdir()
    known = folder / "known hosts"
    known.write_text(Path(sandbox.known_hosts).read_text())
    config = tmp_path / "cluster.yaml"
    data = yaml.safe_load(sandbox.cluster_file.read_text())
    data["ssh"]["known_hosts"] = str(known)
    config.write_text(yaml.safe_dump(data))
    fresh = {"ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path / "cp")}  # a new connection's check
    rc, summary = health_json("--config", str(config), env=fresh)
    assert rc == 0, {n: v["message"] for n, v in summary["nodes"].items()}
