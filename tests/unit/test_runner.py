"""The ansible-runner arguments, built in one place; and how events become host outcomes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.conftest import SEED_CLUSTER
from ugro.config import load_cluster_file
from ugro.core.errors import RunError, UsageError
from ugro.nodes import assets
from ugro.nodes.runner import (
    RunResult,
    _EventCollector,
    ansible_environment,
    new_run_dir,
    prune_runs,
    runner_arguments,
)


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("HOME", str(tmp_path))
    return load_cluster_file(SEED_CLUSTER)


def test_arguments(cluster, tmp_path: Path) -> None:
    args = runner_arguments(
        cluster,
        "health",
        run_dir=tmp_path,
        extravars={"a": "1"},
        limit=["gpu1", "gpu2"],
        check=True,
        timeout=30,
    )
    assert args["playbook"] == str(assets.project_dir() / "playbooks" / "health.yml")
    assert args["private_data_dir"] == str(tmp_path)
    assert args["quiet"] is True
    assert args["suppress_env_files"] is True
    assert args["limit"] == "gpu1,gpu2"
    assert args["cmdline"] == "--check"
    assert args["extravars"] == {"a": "1"}
    assert args["timeout"] == 30
    env = args["envvars"]
    assert env["ANSIBLE_CONFIG"] == str(assets.project_dir() / "ansible.cfg")
    assert env["UGRO_CONFIG"] == str(SEED_CLUSTER)
    assert Path(env["ANSIBLE_INVENTORY_PLUGINS"], "ugro_cluster.py").is_file()
    hosts = args["inventory"]["all"]["children"]["nodes"]["children"]["workers"]["hosts"]
    assert sorted(hosts) == ["gpu1", "gpu2"]


def test_unknown_playbook_is_a_usage_error(cluster, tmp_path: Path) -> None:
    with pytest.raises(
        UsageError, match=r"no playbook .nope.; expected one of: collect, health, launch"
    ):
        runner_arguments(cluster, "nope", run_dir=tmp_path)
    with pytest.raises(UsageError):
        runner_arguments(cluster, "../../etc/passwd", run_dir=tmp_path)


def test_events_fold_into_outcomes() -> None:
    seen = []
    collector = _EventCollector(seen.append)
    collector(
        {
            "event": "runner_on_ok",
            "event_data": {
                "host": "a",
                "task": "t",
                "res": {"changed": True, "ansible_facts": {"x": 1}},
            },
        }
    )
    collector(
        {
            "event": "runner_on_failed",
            "event_data": {
                "host": "b",
                "res": {"msg": "non-zero return code", "stderr": "boom\nreal reason"},
            },
        }
    )
    collector(
        {
            "event": "runner_on_failed",
            "event_data": {"host": "a", "ignore_errors": True, "res": {"msg": "ignored"}},
        }
    )
    collector(
        {
            "event": "runner_on_unreachable",
            "event_data": {
                "host": "c",
                "res": {
                    "msg": 'Data could not be sent to remote host "x". ssh: connect to host x port 22: Connection refused'
                },
            },
        }
    )
    hosts = collector.hosts
    assert hosts["a"].ok == 1 and hosts["a"].changed == 1 and hosts["a"].facts == {"x": 1}
    assert not hosts["a"].failed
    assert hosts["b"].failed and hosts["b"].message == "real reason"
    assert (
        hosts["c"].unreachable
        and hosts["c"].message == "connect to host x port 22: Connection refused"
    )
    assert len(seen) == 4


def test_failed_run_becomes_an_error(tmp_path: Path) -> None:
    collector = _EventCollector(None)
    collector({"event": "runner_on_failed", "event_data": {"host": "gpu1", "res": {"msg": "boom"}}})
    result = RunResult("health", "failed", 2, tmp_path, tmp_path / "artifacts", collector.hosts)
    with pytest.raises(RunError) as caught:
        result.raise_for_status()
    assert caught.value.rc == 2 and caught.value.status == "failed"
    assert "gpu1: failed: boom" in caught.value.message
    assert str(tmp_path / "artifacts" / "stdout") in caught.value.message


def test_secrets_are_blanked_for_the_run_and_kept_in_this_process(
    cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_canary")
    monkeypatch.setenv("MY_API_KEY", "k")
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", "/home/me/.vault-pass")
    monkeypatch.setenv("HF_TOKEN_PATH", "/home/me/.hf-token")
    env = ansible_environment(cluster)
    assert env["HF_TOKEN"] == "" and env["MY_API_KEY"] == ""
    # A variable naming a file holds a path, and Ansible needs the vault's.
    assert "ANSIBLE_VAULT_PASSWORD_FILE" not in env and "HF_TOKEN_PATH" not in env
    assert os.environ["HF_TOKEN"] == "hf_canary"  # the process keeps its own environment
    # ansible-runner would turn host-key checking off; the run says otherwise.
    assert env["ANSIBLE_HOST_KEY_CHECKING"] == "True"


def _finished_run(parent: Path, name: str, status: str | None = "successful") -> Path:
    run = parent / name
    (run / "artifacts" / "x").mkdir(parents=True)
    if status:
        (run / "artifacts" / "x" / "status").write_text(status)
    return run


def test_old_runs_are_pruned_but_never_one_still_going(tmp_path: Path) -> None:
    now = time.time()
    runs = [_finished_run(tmp_path, f"20260101_000000_health_{i}") for i in range(6)]
    for age, run in enumerate(reversed(runs)):
        os.utime(run, (now - 60 * age, now - 60 * age))  # the order they started in
    # A long sync that started before them all and has not finished.
    going = _finished_run(tmp_path, "20260101_000000_sync_going", status=None)
    os.utime(going, (now - 1800, now - 1800))
    removed = prune_runs(tmp_path, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [going.name, *(r.name for r in runs[-3:])]
    )
    assert set(removed) == set(runs[:3])
    # A run that died without a status is let go once it is a day old.
    os.utime(going, (now - 2 * 86400, now - 2 * 86400))
    prune_runs(tmp_path, keep=3)
    assert not going.exists()


def test_a_new_run_prunes_to_the_cluster_setting(cluster, tmp_path: Path) -> None:
    from dataclasses import replace

    small = replace(cluster, logging=replace(cluster.logging, keep_runs=2))
    for _ in range(4):
        run_dir = new_run_dir(small, "health", parent=tmp_path)
        (run_dir / "artifacts" / "x").mkdir(parents=True)
        (run_dir / "artifacts" / "x" / "status").write_text("successful")
    assert len(list(tmp_path.iterdir())) == 2
