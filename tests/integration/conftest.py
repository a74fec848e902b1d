"""The session's sandbox: a real 3-node cluster (namespaces + sshd) shared by integration tests.

Brought up once, torn down at the end even when tests fail. Where it cannot run (not root, no
iproute2 or openssh-server) the tests that need it skip and say why.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import run_ugro
from ugro.core.errors import PrerequisiteError
from ugro.sandbox import layout, lifecycle, system
from ugro.sandbox.layout import Sandbox

SANDBOX_NAME = os.environ.get("UGRO_TEST_SANDBOX", layout.DEFAULT_NAME)
# Reuse a sandbox that is already up (a developer's), and leave it up afterwards.
REUSE = os.environ.get("UGRO_TEST_REUSE_SANDBOX") == "1"


def sandbox_unavailable() -> str | None:
    try:
        system.check_prerequisites()
    except PrerequisiteError as exc:
        return exc.message
    return None


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    reason = sandbox_unavailable()
    if reason:
        pytest.skip(f"no sandbox: {reason}")
    existing = layout.load(SANDBOX_NAME)
    if existing is not None:
        if not REUSE:
            pytest.skip(
                f"a sandbox named {SANDBOX_NAME} is already up: `ugro sandbox down` it, "
                "or set UGRO_TEST_REUSE_SANDBOX=1 to test against it"
            )
        yield existing
        return
    box = lifecycle.up(
        SANDBOX_NAME, wheelhouse=os.environ.get("UGRO_WHEELHOUSE"), echo=lambda _line: None
    )
    try:
        yield box
    finally:
        lifecycle.down(SANDBOX_NAME, echo=lambda _line: None)


def ssh_as(
    box: Sandbox,
    node: layout.NodePlan,
    *argv: str,
    known_hosts: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run argv on a node over real SSH as the node's user, host-key checking on."""
    return subprocess.run(
        box.ssh_argv(node, list(argv), known_hosts=known_hosts),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# The session's reference training run: train_production.py on the tiny Llama across the
# sandbox's 3 nodes, checkpoints every 4 steps.
REFERENCE_TRAINING = [
    "--",
    "--max-steps",
    "20",
    "--logging-steps",
    "2",
    "--eval-strategy",
    "no",
    "--save-strategy",
    "steps",
    "--save-steps",
    "4",
]


@dataclass(frozen=True)
class ReferenceRun:
    job_id: str
    launched: subprocess.CompletedProcess[str]  # `ugro launch`, followed to its end


@pytest.fixture(scope="session")
def reference_run(sandbox: Sandbox) -> ReferenceRun:
    """One real training run, launched and followed as a user would, shared by the tests that
    only read it: everything a job leaves behind (test_launch) and the loss an uninterrupted
    run reaches (test_chaos compares a run through three faults with it)."""
    env = {"UGRO_CONFIG": str(sandbox.cluster_file)}
    done = run_ugro("launch", "--name", "reference", *REFERENCE_TRAINING, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return ReferenceRun(done.stdout.split("Launched ", 1)[1].split(" ", 1)[0], done)
