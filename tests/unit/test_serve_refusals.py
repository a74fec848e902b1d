"""`ugro serve up` refuses in one line, exit 2, before anything starts: an unknown job, a job with
no adapter, jobs on different bases, an engine that is not there, a taken name; and the engine
choice and vLLM's flags follow the adapters and the node (pure).

The node's look (CUDA, vllm, free memory) runs this machine's Python for the built-in one-node
cluster; nothing here starts a server (the sandbox tests do: tests/integration/test_serve.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from ugro.cli import cli
from ugro.config import load_cluster_file
from ugro.core.cluster import Cluster
from ugro.records.deployments import (
    SERVING,
    STOPPED,
    Deployment,
    DeploymentFiles,
    DeploymentState,
    ServedModel,
    deployments_root,
    serving_nodes,
)
from ugro.records.history import Jobs
from ugro.serve import engines
from ugro.serve.adapters import JobAdapter, common_base, find_adapters


def _job(
    cluster: Cluster,
    job_id: str,
    *,
    model: str = "tiny-llama",
    weights: bytes | None = b"weights-1",
    adapter: dict[str, Any] | None = None,
) -> Path:
    jobs = Jobs(cluster)
    directory = jobs.create(job_id)
    jobs.record(job_id, "launching", nodes=["m"])
    jobs.record(job_id, "running")
    jobs.record(job_id, "succeeded")
    (directory / "train_config.json").write_text(json.dumps({"model": model}))
    if adapter is not None:
        (directory / "artifacts" / "adapter").mkdir(parents=True)
        (directory / "artifacts" / "adapter" / "adapter_config.json").write_text(
            json.dumps(adapter)
        )
    if weights is not None:
        (directory / "artifacts" / "base_model").mkdir(parents=True, exist_ok=True)
        (directory / "artifacts" / "base_model" / "model.safetensors").write_bytes(weights)
    return directory


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    """A one-node cluster (this machine, its interpreter) whose project lives in tmp_path."""
    path = tmp_path / "cluster.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "cluster": {
                    "name": "t",
                    "master": {
                        "hostname": "m",
                        "ip": "127.0.0.1",
                        "user": "root",
                        "python": sys.executable,
                    },
                },
                "paths": {"project_root": str(tmp_path / "project")},
            }
        )
    )
    return load_cluster_file(path)


LORA = {"r": 8, "target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": None}


def _up(cluster: Cluster, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli, ["--config", str(cluster.source), "serve", "up", *args], standalone_mode=False
    )
    if result.exception and not isinstance(result.exception, SystemExit):
        from ugro.core.errors import UgroError

        assert isinstance(result.exception, UgroError), result.exception
        return int(result.exception.exit_code), result.exception.message
    return result.exit_code, result.output


def test_unknown_job_is_refused(cluster: Cluster) -> None:
    code, message = _up(cluster, "nosuch")
    assert code == 2 and "no job named 'nosuch'" in message


def test_a_job_without_an_adapter_is_refused(cluster: Cluster) -> None:
    _job(cluster, "bare_20260101_000000", adapter=None)
    code, message = _up(cluster, "bare")
    assert code == 2 and "bare_20260101_000000 has no adapter" in message
    assert not deployments_root(cluster).exists()


def test_jobs_on_different_bases_are_refused_naming_both(cluster: Cluster) -> None:
    _job(cluster, "one_20260101_000000", adapter=LORA, weights=b"seed 1")
    _job(cluster, "two_20260101_000000", adapter=LORA, weights=b"seed 2")
    _job(cluster, "hub_20260101_000000", adapter=LORA, weights=None, model="org/other")
    code, message = _up(cluster, "one", "two")
    assert code == 2 and "one_20260101_000000 was trained on tiny-llama" in message
    assert "two_20260101_000000" in message
    code, message = _up(cluster, "one", "hub")
    assert code == 2 and "org/other" in message


def test_the_same_job_twice_and_a_bad_name_are_refused(cluster: Cluster) -> None:
    _job(cluster, "one_20260101_000000", adapter=LORA)
    assert "named twice" in _up(cluster, "one", "one")[1]
    code, message = _up(cluster, "one", "--name", "../x")
    assert code == 2 and "../x" in message


def test_vllm_on_a_node_without_cuda_is_refused_and_nothing_is_left(cluster: Cluster) -> None:
    _job(cluster, "one_20260101_000000", adapter=LORA)
    code, message = _up(cluster, "one", "--engine", "vllm")
    assert code == 2
    assert message.startswith("--engine vllm cannot serve here: m has no CUDA GPU")
    assert not (deployments_root(cluster) / "one").exists()


def test_a_missing_key_file_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    _job(cluster, "one_20260101_000000", adapter=LORA)
    code, message = _up(cluster, "one", "--api-key-file", str(tmp_path / "none"))
    assert code == 2 and "--api-key-file" in message
    short = tmp_path / "short"
    short.write_text("abc\n")
    assert "16 or more" in _up(cluster, "one", "--api-key-file", str(short))[1]


def _deployment(cluster: Cluster, name: str, state: str) -> DeploymentFiles:
    files = DeploymentFiles(deployments_root(cluster) / name)
    files.write_deployment(
        Deployment(
            name,
            "m",
            "127.0.0.1",
            8000,
            "transformers",
            "tiny-llama",
            (ServedModel("tiny-llama"),),
            "/tmp/x",
            False,
            "now",
        )
    )
    files.write_state(DeploymentState(state))
    return files


def test_a_serving_name_is_refused_and_its_node_is_busy(cluster: Cluster) -> None:
    _job(cluster, "one_20260101_000000", adapter=LORA)
    _deployment(cluster, "one", SERVING)
    code, message = _up(cluster, "one")
    assert code == 2 and "deployment one exists (serving on m)" in message
    assert serving_nodes(cluster) == {"m": ["one"]}
    code, message = _up(cluster, "one", "--name", "other")
    assert code == 2 and "no idle node to serve on: m serves one" in message
    _deployment(cluster, "one", STOPPED)
    assert serving_nodes(cluster) == {}


def test_a_launch_on_a_serving_node_is_refused_naming_the_deployment() -> None:
    from ugro.launch.refusals import launch_refusals

    request = {
        "job_id": "a_20260101_000000",
        "id_pattern": ".*",
        "script": "s.py",
        "master_addr": "x",
        "master_port": 1,
    }
    hostvars = {"gpu1": {"ugro_health_report": {"free_port": 1}}}
    refusals = launch_refusals(
        hostvars,
        hosts=["gpu1"],
        all_hosts=["gpu1"],
        lead="gpu1",
        request={**request, "serving": {"gpu1": ["chat"]}},
    )
    assert refusals == [
        "gpu1 serves chat: `ugro serve down chat` ends it; --force launches beside it"
    ]
    assert (
        launch_refusals(
            hostvars,
            hosts=["gpu1"],
            all_hosts=["gpu1"],
            lead="gpu1",
            request={**request, "serving": {"gpu1": ["chat"]}, "force": True},
        )
        == []
    )


def _adapter(cluster: Cluster, tmp_path: Path, config: dict[str, Any]) -> JobAdapter:
    _job(cluster, "a_20260101_000000", adapter=config)
    return find_adapters(cluster, ["a"])[0]


def test_auto_takes_vllm_only_where_it_can_serve_the_adapters(
    cluster: Cluster, tmp_path: Path
) -> None:
    plain = _adapter(cluster, tmp_path, LORA)
    assert common_base([plain]).model_id == "tiny-llama"
    gpu = engines.NodeFacts(cuda=True, vllm=True, free_bytes=10 << 30, total_bytes=12 << 30)
    assert engines.choose("auto", "gpu1", gpu, [plain]).engine == engines.VLLM
    cpu = engines.choose("auto", "gpu1", engines.NodeFacts(), [plain])
    assert cpu.engine == engines.TRANSFORMERS and "gpu1 has no CUDA GPU" in cpu.why
    no_vllm = engines.choose("auto", "gpu1", engines.NodeFacts(cuda=True), [plain])
    assert "has no vllm" in no_vllm.why
    head = JobAdapter(
        "h", "h_1", plain.directory, {**LORA, "target_modules": ["lm_head"]}, plain.base, True
    )
    saved = JobAdapter(
        "s", "s_1", plain.directory, {**LORA, "modules_to_save": ["embed"]}, plain.base, True
    )
    choice = engines.choose("auto", "gpu1", gpu, [head, saved])
    assert choice.engine == engines.TRANSFORMERS
    assert "h's adapter targets lm_head" in choice.why and "s's adapter saves" in choice.why


def test_vllm_flags_follow_the_adapters_and_the_free_memory() -> None:
    facts = engines.NodeFacts(cuda=True, vllm=True, free_bytes=6 << 30, total_bytes=12 << 30)
    arguments = engines.vllm_arguments(
        base="/m/base",
        adapters=[("a", "/m/a"), ("b", "/m/b")],
        max_rank=24,
        host="10.0.0.2",
        port=8000,
        facts=facts,
    )
    assert arguments == [
        "--model",
        "/m/base",
        "--host",
        "10.0.0.2",
        "--port",
        "8000",
        "--gpu-memory-utilization",
        "0.45",
        "--enable-lora",
        "--max-lora-rank",
        "32",
        "--max-loras",
        "2",
        "--lora-modules",
        "a=/m/a",
        "b=/m/b",
    ]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_needs_no_key(host: str) -> None:
    from ugro.serve.deploy import is_loopback

    assert is_loopback(host) and not is_loopback("10.213.0.2")
