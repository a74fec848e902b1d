"""The inventory derived from cluster.yaml, pinned by golden files.

Regenerate after an intended change with `UGRO_UPDATE_GOLDEN=1 pytest tests/unit/test_inventory.py`
and review the diff.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import SEED_CLUSTER
from ugro.config import load_cluster_file
from ugro.nodes.inventory import build_inventory, inventory_list
from ugro.sandbox import layout

GOLDEN = Path(__file__).parent / "golden"


def normalized(data: dict) -> dict:
    """Machine-specific values (this interpreter) replaced by a placeholder."""
    return json.loads(json.dumps(data).replace(json.dumps(sys.executable)[1:-1], "<python>"))


def check_golden(name: str, data: dict) -> None:
    path = GOLDEN / name
    text = json.dumps(normalized(data), indent=2, sort_keys=True) + "\n"
    if os.environ.get("UGRO_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UGRO_UPDATE_GOLDEN=1"
    assert text == path.read_text()


@pytest.fixture
def seed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "gpuadmin")
    monkeypatch.setenv("HOME", "/home/gpuadmin")


@pytest.mark.usefixtures("seed_env")
def test_seed_inventory_golden() -> None:
    cluster = load_cluster_file(SEED_CLUSTER)
    check_golden("seed_inventory.json", inventory_list(cluster))


def test_sandbox_inventory_golden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/root")
    monkeypatch.setenv(layout.ROOT_ENV, "/var/lib/ugro/sandbox")
    monkeypatch.setenv(layout.ENV_DIR_ENV, "/opt/ugro/sandbox-env")
    box = layout.plan("ugro", 3, layout.DEFAULT_SUBNET, master_user="root")
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(layout.cluster_yaml(box)))
    check_golden("sandbox_inventory.json", inventory_list(load_cluster_file(path)))


@pytest.mark.usefixtures("seed_env")
def test_both_forms_agree() -> None:
    cluster = load_cluster_file(SEED_CLUSTER)
    tree = build_inventory(cluster)["all"]["children"]["nodes"]["children"]
    listing = inventory_list(cluster)
    for group in ("master", "workers"):
        assert sorted(tree[group]["hosts"]) == sorted(listing[group]["hosts"])
        for host, variables in tree[group]["hosts"].items():
            assert variables == listing["_meta"]["hostvars"][host]


def test_a_known_hosts_path_with_a_space_stays_one_argument(tmp_path: Path) -> None:
    import shlex

    from tests.unit.test_config import MINIMAL

    folder = tmp_path / "my keys"
    path = tmp_path / "cluster.yaml"
    path.write_text(MINIMAL + f"ssh:\n  known_hosts: '{folder}/known hosts'\n")
    hostvars = inventory_list(load_cluster_file(path))["_meta"]["hostvars"]["gpu1"]
    # Ansible's ssh plugin splits these as a shell would (shlex); ssh then reads the option's
    # value as a list of files unless it is double-quoted.
    option = f'UserKnownHostsFile="{folder}/known hosts"'
    assert shlex.split(hostvars["ansible_ssh_common_args"]) == [
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        option,
    ]
    assert option in shlex.split(hostvars["ugro_rsync_rsh"])


@pytest.mark.usefixtures("seed_env")
def test_host_key_checking_stays_on() -> None:
    hostvars = inventory_list(load_cluster_file(SEED_CLUSTER))["_meta"]["hostvars"]
    for host in ("gpu1", "gpu2"):
        assert "StrictHostKeyChecking=yes" in hostvars[host]["ansible_ssh_common_args"]
        assert hostvars[host]["ansible_ssh_timeout"] == 5
    assert hostvars["gpu-master"]["ansible_connection"] == "local"
