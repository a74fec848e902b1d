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
