"""Fixtures shared by the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ugro.config import load_cluster_file


@pytest.fixture
def cluster(tmp_path: Path):
    """A one-node cluster (this machine) whose project lives in tmp_path."""
    path = tmp_path / "cluster.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "cluster": {
                    "name": "t",
                    "master": {"hostname": "m", "ip": "127.0.0.1", "user": "root"},
                },
                "paths": {"project_root": str(tmp_path / "project")},
                "training": {
                    "default_model": "tiny-llama",
                    "max_seq_length": 64,
                    "lora": {"target_modules": ["q_proj", "k_proj"]},
                },
            }
        )
    )
    return load_cluster_file(path)


def master_and_workers(tmp_path: Path, workers: list[dict], **master: object):
    """A cluster of a master (m, 10.0.0.1) and one worker per entry (w0 at 10.0.0.2, ...), each
    with the entry's own keys; nothing here is ever contacted."""
    path = tmp_path / "cluster.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "cluster": {
                    "name": "t",
                    "master": {"hostname": "m", "ip": "10.0.0.1", "user": "u", **master},
                },
                "workers": [
                    {
                        "name": f"w{i}",
                        "hostname": f"w{i}",
                        "ip": f"10.0.0.{i + 2}",
                        "user": "u",
                        "rank": i + 1,
                        **extra,
                    }
                    for i, extra in enumerate(workers)
                ],
                "paths": {"project_root": str(tmp_path / "p")},
            }
        )
    )
    return load_cluster_file(path)
