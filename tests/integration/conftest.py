"""The session's sandbox: a real 3-node cluster (namespaces + sshd) shared by integration tests.

Brought up once, torn down at the end even when tests fail. Where it cannot run (not root, no
iproute2 or openssh-server) the tests that need it skip and say why.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

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
