"""A plain (non-editable) install: the wheel carries the playbooks, roles, templates and scripts
it runs, and `ugro` works from any directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
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
    playbooks = {f"ugro/_project/playbooks/{p.name}" for p in (REPO / "playbooks").glob("*.yml")}
    assert playbooks <= names, "a playbook is missing from pyproject.toml's force-include"
    # The links beside the playbooks (roles/, plugins) stay out of the wheel.
    assert not [n for n in names if n.startswith("ugro/_project/playbooks/roles/")]


def installed(wheel: Path, venv: Path) -> Path:
    """A venv holding the wheel alone, as `pip install ugro` makes it, and seeing the packages
    ugro needs through this interpreter's site-packages (a .pth file; no network, and nothing
    of this checkout: the test environment's own ugro is editable, and a .pth line adds a
    directory without processing the .pth files inside it). ansible-playbook, which pip would
    install as a console script beside ugro's, is written the same way pip writes one."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        check=True,
        timeout=600,
    )
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    (Path(site) / "ugro-test-deps.pth").write_text(ours + "\n")
    script = venv / "bin" / "ansible-playbook"
    script.write_text(f"#!{python}\nfrom ansible.cli.playbook import main\nmain()\n")
    script.chmod(0o755)
    return python


def test_installed_wheel_runs_from_anywhere(wheel: Path, tmp_path: Path) -> None:
    """A newcomer's first commands, with ugro installed and no cluster.yaml anywhere: health is
    green and the first launch trains (the job carries the wheel's own scripts)."""
    venv = tmp_path / "venv"
    python = installed(wheel, venv)
    env = {
        **os.environ,
        "UGRO_HOME": str(tmp_path / "home"),
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("UGRO_CONFIG", None)
    where = subprocess.run(
        [str(python), "-c", "import ugro.nodes.assets as a; print(a.project_dir())"],
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

    launch = subprocess.run(
        [
            ugro,
            "launch",
            "--name",
            "first",
            "--",
            "--max-steps",
            "2",
            "--logging-steps",
            "1",
            "--eval-strategy",
            "no",
            "--save-strategy",
            "no",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
        check=False,
    )
    assert launch.returncode == 0, launch.stdout[-2000:] + launch.stderr[-2000:]
    (job,) = (tmp_path / "home" / "data" / "experiments").iterdir()
    assert (job / "code" / "scripts" / "ugro_rank.py").is_file()
    assert (job / "code" / "config" / "training_defaults.yaml").is_file()
    metrics = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m.get("kind") == "train"] == [1, 2]
