"""The ansible-runner arguments, built in one place; and how events become host outcomes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SEED_CLUSTER
from ugro import assets
from ugro.config import load_cluster_file
from ugro.errors import RunError, UsageError
from ugro.runner import RunResult, _EventCollector, runner_arguments


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
