"""`ugro sync` on this machine with the pixi manager.

pixi cannot be installed here, so a stand-in `pixi` (a script, named as such) records how it was
called and makes the environment a real pixi install would: `.pixi/envs/<name>/bin/python`.
Everything around it is real: the playbook, rsync, the lock-hash bookkeeping, the health check
that runs under the environment afterwards.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_ugro

pytestmark = pytest.mark.slow

# The environment's python runs this interpreter (ugro's, with torch). A wrapper, not a
# symlink: a symlink to a venv's python outside the venv starts the base interpreter, which may
# not have torch (it does not on a fresh CI machine).
STANDIN_PIXI = f"""#!/bin/sh
# Stand-in for pixi (not installable here): log the call, make the environment pixi would.
echo "$@" >> "$(dirname "$0")/calls.log"
mkdir -p .pixi/envs/main/bin
printf '#!/bin/sh\\nexec {sys.executable} "$@"\\n' > .pixi/envs/main/bin/python
chmod +x .pixi/envs/main/bin/python
"""


@pytest.fixture
def pixi_cluster(tmp_path: Path) -> Path:
    manifest = tmp_path / "manifest"
    manifest.mkdir()
    (manifest / "pixi.toml").write_text('[workspace]\nname = "ugro"\n')
    (manifest / "pixi.lock").write_text("version: 6\n")
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "pixi").write_text(STANDIN_PIXI)
    (tools / "pixi").chmod(0o755)
    config = tmp_path / "cluster.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cluster": {
                    "name": "pixi-box",
                    "master": {
                        "hostname": "box",
                        "ip": "127.0.0.1",
                        "user": "root",
                        "accelerator": "cpu",
                    },
                },
                "paths": {"project_root": str(tmp_path / "project")},
                "environment": {
                    "manager": "pixi",
                    "conda_env": "main",
                    "pixi": str(tools / "pixi"),
                    "pixi_manifest_dir": str(manifest),
                },
            }
        )
    )
    return config


def test_pixi_sync_installs_once_per_lock(pixi_cluster: Path) -> None:
    root = pixi_cluster.parent
    calls = root / "tools" / "calls.log"
    done = run_ugro("--config", str(pixi_cluster), "sync", timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    project = root / "project"
    assert calls.read_text().split() == [
        "install",
        "--locked",
        "--manifest-path",
        f"{project}/pixi.toml",
        "--environment",
        "main",
    ]
    assert (project / "pixi.lock").read_text() == "version: 6\n"
    assert (project / "scripts" / "train_production.py").is_file()
    assert not (project / "scripts" / "trainlib" / "__pycache__").exists()
    state = json.loads((project / "data" / "cluster_state.json").read_text())
    assert state["nodes"]["box"]["status"] == "healthy"  # the synced environment imports torch
    assert state["nodes"]["box"]["report"]["lock_hash"]

    again = run_ugro("--config", str(pixi_cluster), "sync", timeout=600)
    assert again.returncode == 0, again.stderr
    assert "no changes" in again.stdout
    assert len(calls.read_text().splitlines()) == 1  # same lock: pixi was not run again

    (root / "manifest" / "pixi.lock").write_text("version: 6\n# changed\n")
    third = run_ugro("--config", str(pixi_cluster), "sync", timeout=600)
    assert third.returncode == 0, third.stderr
    assert len(calls.read_text().splitlines()) == 2


def test_missing_pixi_is_named(pixi_cluster: Path) -> None:
    (pixi_cluster.parent / "tools" / "pixi").unlink()
    done = run_ugro("--config", str(pixi_cluster), "sync", timeout=600)
    assert done.returncode == 1
    assert "box: pixi not found at" in done.stderr
    assert "Traceback" not in done.stderr


def test_sync_refuses_a_scripts_directory_it_does_not_own(tmp_path: Path) -> None:
    """`ugro sync` replaces the scripts directory's contents: pointed at a directory holding
    someone's files (paths.scripts set to a shared one), it refuses and touches nothing."""
    shared = tmp_path / "shared-bin"
    shared.mkdir()
    (shared / "backup.sh").write_text("#!/bin/sh\necho mine\n")
    config = tmp_path / "cluster.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cluster": {
                    "name": "box",
                    "master": {"hostname": "box", "ip": "127.0.0.1", "user": "root"},
                },
                "paths": {"project_root": str(tmp_path / "project"), "scripts": str(shared)},
                "environment": {"manager": "system"},
            }
        )
    )
    done = run_ugro("--config", str(config), "sync", timeout=600)
    assert done.returncode == 1
    assert f"box: {shared} holds files ugro sync did not put there (backup.sh)" in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in shared.iterdir()) == ["backup.sh"]
    assert (shared / "backup.sh").read_text() == "#!/bin/sh\necho mine\n"

    # Moved away, the directory becomes ugro's: a second sync changes nothing, and a file that
    # ugro put there and no longer ships is removed.
    (shared / "backup.sh").unlink()
    assert run_ugro("--config", str(config), "sync", timeout=600).returncode == 0
    assert (shared / "train_production.py").is_file()
    again = run_ugro("--config", str(config), "sync", timeout=600)
    assert again.returncode == 0 and "no changes" in again.stdout, again.stdout + again.stderr
    manifest_file = shared / ".ugro-sync-manifest"
    manifest = json.loads(manifest_file.read_text())
    assert "train_production.py" in manifest
    (shared / "retired.py").write_text("an earlier ugro shipped this\n")
    manifest_file.write_text(json.dumps([*manifest, "retired.py"]))
    third = run_ugro("--config", str(config), "sync", timeout=600)
    assert third.returncode == 0, third.stderr
    assert not (shared / "retired.py").exists()
