"""A plain (non-editable) install: the wheel carries the playbooks, roles, templates and scripts
it runs, and `ugro` works from any directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = out.glob("ugro-*.whl")
    return path


def test_wheel_carries_what_ugro_runs(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in [
        "ugro/_project/ansible.cfg",
        "ugro/_project/inventory/ugro.yml",
        "ugro/_project/playbooks/health.yml",
        "ugro/_project/playbooks/launch.yml",
        "ugro/_project/roles/ugro_health/module_utils/ugro_probe.py",
        "ugro/_project/roles/ugro_health/library/ugro_health_probe.py",
        "ugro/_project/roles/ugro_launch/tasks/main.yml",
        "ugro/_project/templates/launch.sh.j2",
        "ugro/_project/scripts/train_production.py",
        "ugro/_project/scripts/trainlib/checkpoints.py",
        "ugro/_project/config/training_defaults.yaml",
        "ugro/ansible_plugins/inventory/ugro_cluster.py",
    ]:
        assert expected in names, expected
    assert not [n for n in names if "__pycache__" in n]


def test_installed_wheel_runs_from_anywhere(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        check=True,
        timeout=600,
    )
    env = {
        **os.environ,
        "UGRO_HOME": str(tmp_path / "home"),
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
    }
    where = subprocess.run(
        [str(python), "-c", "import ugro.assets as a; print(a.project_dir())"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=env,
    )
    assert where.stdout.strip().startswith(str(venv))
    ugro = str(venv / "bin" / "ugro")
    assert (
        subprocess.run(
            [ugro, "--help"], capture_output=True, cwd=tmp_path, env=env, check=False
        ).returncode
        == 0
    )
    health = subprocess.run(
        [ugro, "health", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
        check=False,
    )
    assert health.returncode == 0, health.stderr[-2000:]
    summary = json.loads(health.stdout)
    assert summary["nodes"]["local"]["status"] == "healthy"
    command = json.loads(next(Path(summary["run_dir"]).glob("artifacts/*/command")).read_text())
    assert command["env"]["ANSIBLE_CONFIG"].startswith(str(venv))  # the wheel's own playbooks
