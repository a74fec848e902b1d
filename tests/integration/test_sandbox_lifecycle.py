"""`up` and `down` of a second, small sandbox: down leaves nothing, also after a failed up."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import run_ugro
from tests.integration.conftest import sandbox_unavailable
from ugro.core import processes
from ugro.core.errors import SandboxError
from ugro.sandbox import layout, lifecycle, system

pytestmark = pytest.mark.sandbox

NAME = "ugrolc"
SUBNET = "10.214.7.0/24"


@pytest.fixture(autouse=True)
def _needs_sandbox_tools() -> None:
    reason = sandbox_unavailable()
    if reason:
        pytest.skip(f"no sandbox: {reason}")
    if layout.load(NAME) is not None:
        lifecycle.down(NAME)


def leftovers() -> dict[str, list]:
    return {
        "namespaces": [n for n in system.netns_list() if n.startswith(f"{NAME}-")],
        "links": [n for n in system.links() if n.startswith(NAME)],
        "users": [u.pw_name for u in system.users_marked(f"{layout.USER_MARKER} {NAME}")],
        "files": [str(p) for p in [layout.sandbox_root() / NAME] if p.exists()],
    }


def test_up_status_down_leaves_nothing() -> None:
    # The old spelling of --count, kept for this release with a note.
    done = run_ugro("sandbox", "up", "--name", NAME, "--nodes", "2", "--subnet", SUBNET)
    assert done.returncode == 0, done.stderr
    assert "`sandbox up --nodes N` is now `--count N`" in done.stderr
    assert f"ugro --config {layout.sandbox_root() / NAME / 'cluster.yaml'} health" in done.stdout
    box = layout.load(NAME)
    pids = [n.sshd_pid for n in box.nodes]
    assert all(processes.alive(p) for p in pids)
    status = run_ugro("sandbox", "status", "--name", NAME)
    assert status.returncode == 0 and "answers" in status.stdout
    assert run_ugro("sandbox", "up", "--name", NAME).returncode == 2  # already up

    done = run_ugro("sandbox", "down", "--name", NAME)
    assert done.returncode == 0, done.stderr
    assert leftovers() == {"namespaces": [], "links": [], "users": [], "files": []}
    assert not any(processes.alive(p) for p in pids)
    # Idempotent: a second down finds nothing and succeeds.
    assert run_ugro("sandbox", "down", "--name", NAME).returncode == 0
    assert run_ugro("sandbox", "status", "--name", NAME).returncode == 2


def test_failed_up_cleans_up_after_itself() -> None:
    # Something already holds the name the second worker's link needs: up fails half-way.
    blocker = f"{layout.veth_prefix(NAME)}2"
    subprocess.run(["ip", "link", "add", blocker, "type", "bridge"], check=True)
    try:
        with pytest.raises(SandboxError, match="File exists"):
            lifecycle.up(NAME, nodes=3, subnet=SUBNET, echo=lambda _line: None)
    finally:
        subprocess.run(["ip", "link", "delete", blocker], check=False, capture_output=True)
    assert leftovers() == {"namespaces": [], "links": [], "users": [], "files": []}


def test_bad_arguments_are_one_line() -> None:
    for args, expected in [
        (["--count", "1"], "--count 1: expected 2..200"),
        (["--subnet", "8.8.8.0/24"], "expected a private IPv4 network"),
        (["--subnet", "10.0.0.0/30", "--count", "5"], "has 2 addresses; 5 nodes need 5"),
        (["--count", "3", "--nodes", "3"], "--count N gives the number of nodes; drop --nodes"),
        (["--name", "Bad;Name"], "sandbox name 'Bad;Name' is not valid"),
    ]:
        done = run_ugro("sandbox", "up", "--name", NAME, *args)
        assert done.returncode == 2, done.stderr
        assert expected in done.stderr and "Traceback" not in done.stderr
    assert leftovers()["namespaces"] == []
