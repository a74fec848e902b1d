"""The session's sandbox: a real 3-node cluster (namespaces + sshd) shared by integration tests.

Brought up once, torn down at the end even when tests fail. Where it cannot run (not root, no
iproute2 or openssh-server) the tests that need it skip and say why. A test that fails leaves no
job behind on it: what it started is stopped, so one failure does not become the next test's
(a node busy with a stopped rank holds every later job off it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import run_ugro
from ugro.config import load_cluster_file
from ugro.core.errors import PrerequisiteError
from ugro.records.controller_files import ControllerHandle
from ugro.records.history import Jobs
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


FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    if report.failed:
        item.stash[FAILED] = True
    return report


@pytest.fixture(autouse=True)
def _no_job_outlives_a_failed_test(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not request.node.stash.get(FAILED, False) or "sandbox" not in request.fixturenames:
        return
    box: Sandbox = request.getfixturevalue("sandbox")
    env = {"UGRO_CONFIG": str(box.cluster_file)}
    jobs = Jobs(load_cluster_file(box.cluster_file))
    for record in jobs.records().values():
        # A failed attempt with a retry to come has ended; its controller still works.
        if not record.ended or ControllerHandle(jobs.experiment_dir(record.job_id)).working():
            run_ugro("stop", record.job_id, env=env)
    run_ugro("reset", "--yes", env=env)


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
# sandbox's 3 nodes, checkpoints every 6 steps. A step takes about a quarter of a second here:
# the steps are many so that a fault injected a few steps into an attempt (test_chaos) always
# lands seconds before the run could end; its start-up costs far more than they do.
REFERENCE_STEPS = 48
REFERENCE_SAVE_EVERY = 6
REFERENCE_TRAINING = [
    "--",
    "--max-steps",
    str(REFERENCE_STEPS),
    "--logging-steps",
    "2",
    "--eval-strategy",
    "no",
    "--save-strategy",
    "steps",
    "--save-steps",
    str(REFERENCE_SAVE_EVERY),
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


# --- the dashboard in a real browser (test_dashboard, test_serve) --------------------------

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("UGRO_TEST_ARTIFACTS", REPO / "test-artifacts"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "dashboard-test-token-0123"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def browser() -> Iterator[object]:
    if CHROMIUM is None:
        pytest.skip("no chromium here (apt-get install chromium; scripts/setup.sh does)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        # Root (as in CI) cannot use chromium's sandbox; the pages are our own.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def dashboard(sandbox) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ugro",
            "--config",
            str(sandbox.cluster_file),
            "dashboard",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "UGRO_DASHBOARD_TOKEN": TOKEN},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    try:
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)
