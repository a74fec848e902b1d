"""Each role's molecule scenario, run as CI runs it (delegated driver, this machine)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

ROLES = sorted(
    p.parent.parent.parent.name for p in REPO.glob("roles/*/molecule/default/molecule.yml")
)


@pytest.mark.slow
@pytest.mark.parametrize("role", ROLES)
def test_molecule_scenario(role: str) -> None:
    bin_dir = str(Path(sys.executable).parent)
    if not shutil.which("molecule", path=bin_dir + os.pathsep + os.environ.get("PATH", "")):
        pytest.skip("molecule is not installed (pip install -e '.[dev]')")
    done = subprocess.run(
        ["molecule", "test"],
        cwd=REPO / "roles" / role,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={
            **os.environ,
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "NO_COLOR": "1",
            "PY_COLORS": "0",
            "ANSIBLE_FORCE_COLOR": "0",
        },
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "verify" in done.stdout + done.stderr
