"""Fixtures shared by every tier."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ugro.records.history import Jobs

REPO = Path(__file__).resolve().parent.parent
SEED_CLUSTER = REPO / "tests" / "fixtures" / "seed_cluster.yaml"


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep Ansible's and ugro's per-user state out of the real home, and no stray config."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("ANSIBLE_HOME", str(base / "ansible-home"))
    monkeypatch.setenv("ANSIBLE_LOCAL_TEMP", str(base / "ansible-tmp"))
    monkeypatch.setenv("UGRO_HOME", str(base / "ugro-home"))
    monkeypatch.setenv("UGRO_CACHE_DIR", str(base / "ugro-cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(base / "xdg-cache"))  # the probe's torch facts
    monkeypatch.delenv("UGRO_CONFIG", raising=False)


@pytest.fixture(scope="session")
def needs_torch() -> None:
    """Skip a test that runs torch in this interpreter where torch is not installed (the unit
    tier runs without the [train] extra; `bash scripts/setup.sh` installs it)."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"torch is not importable here ({exc}): bash scripts/setup.sh installs it")


@pytest.fixture(scope="session")
def trainlib(needs_torch: None) -> Iterator[SimpleNamespace]:
    """The training scripts' library (scripts/trainlib, train_production) in this interpreter."""
    scripts = str(REPO / "scripts")
    # Ansible, imported in this process by other tests, replaces sys.intern with a patch object;
    # torch._dynamo (imported by transformers' masking and models) refuses to load beside it.
    # Loaded here with the builtin back in place, they need it no more.
    patched = sys.intern
    sys.intern = getattr(patched, "unpatched_implementation", patched)
    sys.path.insert(0, scripts)
    try:
        import peft
        import torch._dynamo  # noqa: F401
        import train_production
        import transformers
        import transformers.masking_utils
        from trainlib import (
            conversations,
            data,
            examples,
            formats,
            models,
            packing,
            settings,
            speed,
        )
        from trainlib.errors import TrainingSetupError
        from transformers.models.llama import modeling_llama  # noqa: F401

        yield SimpleNamespace(
            conversations=conversations,
            data=data,
            examples=examples,
            formats=formats,
            models=models,
            packing=packing,
            settings=settings,
            speed=speed,
            train_production=train_production,
            transformers=transformers,
            peft=peft,
            Error=TrainingSetupError,
        )
    finally:
        sys.intern = patched
        sys.path.remove(scripts)


def history_lines(jobs: Jobs) -> list[dict[str, Any]]:
    """data/job_history.jsonl's lines as written, read as a user's script would read them."""
    path = jobs.paths.job_history
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_ugro(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "ugro", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that uses the sandbox carries the `sandbox` marker, whether its module says
    so or only its fixtures do: scripts/test.sh runs the sandbox's lane (`-m sandbox`, in order,
    on the session's one sandbox) and beside it, in a PID namespace of its own, the rest."""
    for item in items:
        if "sandbox" in getattr(item, "fixturenames", ()) and not item.get_closest_marker(
            "sandbox"
        ):
            item.add_marker(pytest.mark.sandbox)
