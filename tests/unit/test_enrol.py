"""Enrolling nodes, the parts that need no node: cluster.yaml edited byte for byte (golden
files), known_hosts lines and fingerprints as OpenSSH writes them, what a node is checked for,
and hostile input refused before anything runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_ugro
from ugro.config import edit, load_cluster_file
from ugro.core.errors import ConfigError
from ugro.enrol import facts
from ugro.nodes import hostkeys
from ugro.records.history import Jobs

GOLDEN = Path(__file__).parent / "golden"
NEW_NODE = {
    "name": "gpu3",
    "hostname": "gpu3",
    "ip": "10.0.0.4",
    "user": "ada",
    "ssh_port": 22,
    "rank": 3,
    "accelerator": "cuda",
    "hardware": {"gpu_model": "NVIDIA GeForce RTX 5070 Ti", "gpu_count": 1, "vram_gb": 15.9},
}


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UGRO_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs: UGRO_UPDATE_GOLDEN=1 after a change"


def test_adding_a_node_keeps_every_byte_but_its_own_lines() -> None:
    before = (GOLDEN / "cluster_by_hand.yaml").read_text()
    after = edit.add_worker(before, NEW_NODE)
    check_golden("cluster_by_hand.added.yaml", after)
    # Every line of the person's file is still there, in order, and the new ones follow gpu2.
    assert after.startswith(before.split("\nssh:")[0].rstrip("\n"))
    assert after.endswith("\nssh:\n    connect_timeout: 7   # the Wi-Fi one answers slowly\n")
    assert yaml.safe_load(after)["workers"][-1] == NEW_NODE


def test_removing_a_node_takes_its_lines_and_moves_later_ranks_down() -> None:
    before = (GOLDEN / "cluster_by_hand.yaml").read_text()
    after = edit.remove_worker(before, "gpu1")
    check_golden("cluster_by_hand.removed.yaml", after)
    assert "the 4070" not in after and "# the 3070 Ti upstairs" in after
    assert "      rank: 1     # the slowest\n" in after  # its comment stays with it
    workers = yaml.safe_load(edit.remove_worker(after, "gpu2"))["workers"]
    assert workers == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "cluster:\n  master: {hostname: a, ip: 10.0.0.1, user: me}\n",
            "workers:\n  - name: gpu3\n",
        ),
        (
            "cluster:\n  master: {hostname: a, ip: 10.0.0.1, user: me}\nworkers: []  # later\n",
            "workers:  # later\n  - name: gpu3\n",
        ),
    ],
)
def test_a_cluster_of_the_master_alone_gets_its_first_worker(text: str, expected: str) -> None:
    after = edit.add_worker(text, NEW_NODE)
    assert expected in after and yaml.safe_load(after)["workers"] == [NEW_NODE]


def test_a_layout_that_cannot_be_edited_safely_is_refused() -> None:
    text = "cluster:\n  master: {hostname: a, ip: 10.0.0.1, user: me}\nworkers: [{name: b}]\n"
    with pytest.raises(ConfigError, match="flow list"):
        edit.add_worker(text, NEW_NODE)


def test_an_edit_the_loader_refuses_leaves_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text((GOLDEN / "cluster_by_hand.yaml").read_text())
    before = path.read_bytes()
    clash = dict(NEW_NODE, rank=2)  # gpu2's
    with pytest.raises(ConfigError, match=r"cluster.yaml.*rank.*2 is already used by gpu2"):
        edit.replace_checked(path, edit.add_worker(before.decode(), clash))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["cluster.yaml"]  # no temporary left


def test_fingerprints_are_ssh_keygens(tmp_path: Path) -> None:
    key = tmp_path / "host"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    key_type, blob = key.with_suffix(".pub").read_text().split()[:2]
    listed = subprocess.run(
        ["ssh-keygen", "-lf", str(key.with_suffix(".pub"))], capture_output=True, text=True
    ).stdout.split()[1]
    assert hostkeys.HostKey(key_type, blob).fingerprint == listed


def test_known_hosts_lines_are_replaced_and_removed_one_host_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(
        "# mine\n10.0.0.2 ssh-ed25519 AAAAold\n[10.0.0.2]:2222 ssh-ed25519 AAAAport\n"
        "10.0.0.3,gpu2 ssh-ed25519 AAAAtwo\n"
    )
    new = hostkeys.HostKey("ssh-ed25519", "AAAAnew")
    text = hostkeys.with_key(path, "10.0.0.2", 22, new)
    assert text == (
        "# mine\n[10.0.0.2]:2222 ssh-ed25519 AAAAport\n10.0.0.3,gpu2 ssh-ed25519 AAAAtwo\n"
        "10.0.0.2 ssh-ed25519 AAAAnew\n"
    )
    hostkeys.write_private(path, text)
    assert path.stat().st_mode & 0o777 == 0o600
    assert hostkeys.known_keys(path, "10.0.0.2", 2222) == [
        hostkeys.HostKey("ssh-ed25519", "AAAAport")
    ]
    # A line naming two hosts loses only the one removed.
    assert "gpu2 ssh-ed25519 AAAAtwo" in hostkeys.with_key(path, "10.0.0.3", 22, None)


def test_a_refusal_for_a_changed_key_names_both_fingerprints(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "known_hosts"
    old, now = (
        hostkeys.HostKey("ssh-ed25519", "AAAAold="),
        hostkeys.HostKey("ssh-ed25519", "AAAAnow="),
    )
    path.write_text(f"10.0.0.2 {old.key_type} {old.blob}\n")
    monkeypatch.setattr(hostkeys, "scan", lambda address, port: [now])  # the node, reinstalled
    said = (
        "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@ ... Host key verification failed."
    )
    line = hostkeys.explain_refusal(path, "gpu1", "10.0.0.2", 22, said)
    assert line is not None and old.fingerprint in line and now.fingerprint in line
    assert "`ugro node rekey gpu1`" in line and "\n" not in line
    assert hostkeys.explain_refusal(path, "gpu1", "10.0.0.2", 22, "Connection refused") is None


def test_what_a_node_is_checked_for() -> None:
    found = facts.parse(
        "hostname=gpu1\nhome=/home/ob\npython3=/usr/bin/python3\npython_version=3.7\nrsync=\n"
        "disk_free_kb=1048576\ncpu_cores=8\nmem_kb=16384000\npixi=\n"
        "gpu=NVIDIA GeForce RTX 5070 Ti, 560.35.03, 12.0, 16303\n"
    )
    problems = facts.problems(found, name="gpu1", manager="pixi", disk_min_free_gb=5)
    assert len(problems) == 5
    joined = " | ".join(problems)
    assert "3.7; UGRO needs 3.8 or newer" in joined and "has no rsync" in joined
    assert "1.0 GB free" in joined
    assert "(sm_120) needs a driver of the 570 series or newer and a CUDA 12.8 torch" in joined
    assert "has no pixi" in joined
    ready = facts.parse(
        "python3=/usr/bin/python3\npython_version=3.11\nrsync=/usr/bin/rsync\ndisk_free_kb=99999999\n"
        "gpu=NVIDIA GeForce RTX 4070, 570.86.10, 8.9, 8188\n"
    )
    assert facts.problems(ready, name="gpu1", manager="venv", disk_min_free_gb=5) == []
    assert ready.hardware()["vram_gb"] == 8.0 and ready.accelerator == "cuda"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["gpu1", "--ip", "-oProxyCommand=touch /tmp/x", "--user", "ob"], "--ip '-oProxyCommand"),
        (["gpu1", "--ip", "a;b", "--user", "ob"], "--ip 'a;b': 'a;b' is not an IP address"),
        (["../x", "--ip", "10.0.0.9", "--user", "ob"], "NAME '../x'"),
        (["gpu9", "--ip", "10.0.0.9", "--user", "-oX"], "--user '-oX'"),
        (["gpu1", "--ip", "10.0.0.9", "--user", "ob"], "gpu1 is already a node"),
        (["gpu9", "--ip", "10.0.0.2", "--user", "ob"], "10.0.0.2:22 is already gpu1's address"),
    ],
)
def test_node_add_refuses_bad_input_before_anything_runs(tmp_path: Path, args, expected) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text((GOLDEN / "cluster_by_hand.yaml").read_text())
    before = path.read_bytes()
    done = run_ugro("--config", str(path), "node", "add", *args, env={"HOME": str(tmp_path)})
    assert done.returncode == 2 and expected in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert path.read_bytes() == before and not (tmp_path / ".config").exists()


def test_init_writes_this_machine_and_never_overwrites_silently(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    env = {"HOME": str(tmp_path)}
    done = run_ugro("--config", str(path), "init", "--ip", "10.9.8.7", "--name", "lab", env=env)
    assert done.returncode == 0, done.stderr
    written = yaml.safe_load(path.read_text())
    master = written["cluster"]["master"]
    assert (master["ip"], master["connection"], written["workers"]) == ("10.9.8.7", "local", [])
    key = tmp_path / ".config" / "ugro" / "id_ed25519"
    assert written["ssh"]["identity_file"] == str(key)
    for private in (key, tmp_path / ".config" / "ugro" / "known_hosts"):
        assert private.stat().st_mode & 0o777 == 0o600
    first_key = key.read_bytes()
    again = run_ugro("--config", str(path), "init", env=env)
    assert again.returncode == 2 and "--force" in again.stderr
    forced = run_ugro("--config", str(path), "init", "--force", "--ip", "10.9.8.6", env=env)
    assert forced.returncode == 0, forced.stderr
    assert "10.9.8.7" in (tmp_path / "cluster.yaml.bak").read_text()
    assert key.read_bytes() == first_key  # UGRO's key is made once
    listed = run_ugro("--config", str(path), "node", "list", "--json", env=env)
    assert listed.returncode == 0 and '"host_key": "local"' in listed.stdout


def test_a_node_in_use_is_not_removed_and_a_free_one_is(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(
        (GOLDEN / "cluster_by_hand.yaml").read_text() + f"paths:\n    project_root: {tmp_path}\n"
    )
    known = tmp_path / "known_hosts"
    known.write_text("10.0.0.2 ssh-ed25519 AAAAone\n10.0.0.3 ssh-ed25519 AAAAtwo\n")
    text = path.read_text().replace(
        "    connect_timeout: 7", f"    connect_timeout: 7\n    known_hosts: {known}"
    )
    path.write_text(text)
    jobs = Jobs(load_cluster_file(path))
    jobs.record("busy_20260101_000000", "launching", nodes=["gpu-master", "gpu1"])
    jobs.record("later_20260101_000000", "queued", nodes=["gpu2"])
    before = path.read_bytes(), known.read_bytes()
    for node, why in (("gpu1", "runs busy_"), ("gpu2", "is queued for later_"),
                      ("gpu-master", "is the master")):  # fmt: skip
        refused = run_ugro("--config", str(path), "node", "remove", node)
        assert refused.returncode == 2 and why in refused.stderr, refused.stderr
    assert (path.read_bytes(), known.read_bytes()) == before
    jobs.record("later_20260101_000000", "stopped", reason="cancelled before it started")
    removed = run_ugro("--config", str(path), "node", "remove", "gpu2")
    assert removed.returncode == 0, removed.stderr
    assert known.read_text() == "10.0.0.2 ssh-ed25519 AAAAone\n"
    assert [w["name"] for w in yaml.safe_load(path.read_text())["workers"]] == ["gpu1"]
