"""From bare machines to a trained job with `ugro init` and `ugro node add` only, on a sandbox
of bare nodes (`ugro sandbox up --bare`: users with a password and no authorized key, host keys
the master has never seen). The password is fed through SSH_ASKPASS, as a person would type it
at ssh's prompt; each fingerprint is read from the node's own host key file, as its owner would
read it on its console. Then the faults: a reinstalled node, a wrong fingerprint, a wrong
password, a node without rsync, an address where nothing answers.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import run_ugro
from tests.integration.conftest import sandbox_unavailable
from ugro.sandbox import faults, layout, lifecycle
from ugro.sandbox.layout import Sandbox

# A sandbox of its own: the test runs beside the session's sandbox's tests (scripts/test.sh).
pytestmark = pytest.mark.slow

NAME = "enrol"
SUBNET = "10.213.9.0/24"
# The training settings a person would write after `ugro init`: the sandbox's shared
# environment, and the offline tiny model.
SETTINGS = """\
environment:
  manager: venv
  path: {env}
training:
  default_model: tiny-llama
  default_dataset: builtin
  max_seq_length: 64
"""
SHORT_JOB = [
    "--",
    "--max-steps",
    "2",
    "--logging-steps",
    "1",
    "--eval-strategy",
    "no",
    "--save-strategy",
    "no",
]


@dataclass
class Enrolment:
    box: Sandbox
    home: Path
    config: Path

    def env(self, password_file: Path | None = None) -> dict[str, str]:
        askpass = self.home / ("askpass" if password_file is None else "askpass-other")
        askpass.write_text(f"#!/bin/sh\ncat {password_file or self.box.password_file}\n")
        askpass.chmod(0o700)
        return {"HOME": str(self.home), "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"}

    def ugro(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_ugro("--config", str(self.config), *args, env=env or self.env())

    def add(
        self, node: str, *, key_of: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`ugro node add` of a sandbox node, with the fingerprint of `key_of`'s host key (its
        own by default), as read on that node's console."""
        plan = self.box.node(node)
        return self.ugro(
            "node", "add", node, "--ip", plan.address, "--user", plan.user,
            "--fingerprint", self.fingerprint(key_of or node), env=env,
        )  # fmt: skip

    def at_a_terminal(self, args: list[str], *, answer: str) -> tuple[int, str]:
        """ugro run with a terminal of its own (a pty); `answer` typed at its question."""
        primary, secondary = pty.openpty()
        process = subprocess.Popen(
            [sys.executable, "-m", "ugro", "--config", str(self.config), *args],
            stdin=secondary,
            stdout=secondary,
            stderr=secondary,
            env={**os.environ, **self.env()},
            close_fds=True,
        )
        os.close(secondary)
        said, answered = b"", False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(primary, 4096)
                except OSError:  # the terminal's other end closed: ugro is done
                    break
                if not chunk:
                    break
                said += chunk
            if not answered and b"Is it the same?" in said:
                os.write(primary, answer.encode() + b"\n")
                answered = True
        os.close(primary)
        return process.wait(timeout=30), said.decode("utf-8", "replace")

    def fingerprint(self, node: str) -> str:
        """What `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints on the node."""
        public = self.box.node_dir(self.box.node(node)) / "ssh_host_ed25519_key.pub"
        listed = subprocess.run(["ssh-keygen", "-lf", str(public)], capture_output=True, text=True)
        return listed.stdout.split()[1]

    def files(self) -> tuple[bytes, bytes]:
        known = self.home / ".config" / "ugro" / "known_hosts"
        return self.config.read_bytes(), known.read_bytes()


@pytest.fixture(scope="module")
def enrolment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Enrolment]:
    reason = sandbox_unavailable()
    if reason:
        pytest.skip(f"no sandbox: {reason}")
    if layout.load(NAME) is not None:
        lifecycle.down(NAME, echo=lambda _line: None)
    box = lifecycle.up(NAME, nodes=3, subnet=SUBNET, bare=True, echo=lambda _line: None)
    home = tmp_path_factory.mktemp("enrol-home")
    enrolment = Enrolment(box, home, home / "cluster.yaml")
    try:
        yield enrolment
    finally:
        if enrolment.config.exists():
            enrolment.ugro("reset", "--yes")  # whatever a failed test left on the master
        lifecycle.down(NAME, echo=lambda _line: None)


def test_two_bare_nodes_enrol_from_init_and_train_together(enrolment: Enrolment) -> None:
    box = enrolment.box
    init = enrolment.ugro("init", "--ip", box.master_address, "--name", "enrolled")
    assert init.returncode == 0, init.stderr
    assert "node add" in init.stdout
    # The person's own settings for training, written into the file init made.
    text = enrolment.config.read_text()
    assert "environment:\n  manager: venv\n" in text
    enrolment.config.write_text(
        text.replace("environment:\n  manager: venv\n", SETTINGS.format(env=box.env_dir))
    )
    # The rendezvous port of this sandbox (jobs of the built-in cluster use 29500).
    port = layout.rendezvous_port(NAME)
    text = enrolment.config.read_text().replace(
        "  master:\n", f"  communication:\n    master_port: {port}\n  master:\n", 1
    )
    enrolment.config.write_text(text)
    gpu1, gpu2 = box.nodes

    # A wrong fingerprint, then a wrong password: refused, nothing written.
    before = enrolment.files()
    wrong = enrolment.add("gpu1", key_of="gpu2")
    assert wrong.returncode == 2 and "does not match gpu1's host key" in wrong.stderr
    bad_password = enrolment.home / "not-the-password"
    bad_password.write_text("letmein\n")
    refused = enrolment.add("gpu1", env=enrolment.env(bad_password))
    assert refused.returncode == 2 and "could not log in as" in refused.stderr, refused.stderr
    assert "letmein" not in refused.stdout + refused.stderr
    assert enrolment.files() == before

    for node in (gpu1, gpu2):
        added = enrolment.add(node.name)
        assert added.returncode == 0, added.stdout[-2000:] + added.stderr[-2000:]
        assert f"Added {node.name} (rank {node.rank})" in added.stdout
    password = box.password_file.read_text().strip()
    assert password not in enrolment.config.read_text()
    stored = [p for p in enrolment.home.rglob("*") if p.is_file() and p.name != "askpass"]
    assert not any(password in p.read_text(errors="replace") for p in stored)

    launched = enrolment.ugro("launch", "--name", "enrolled", *SHORT_JOB)
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    (job,) = (enrolment.home / "data" / "experiments").iterdir()
    assert json.loads((job / "config.json").read_text())["nodes"][1:] == ["gpu1", "gpu2"]
    metrics = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m.get("kind") == "train"] == [1, 2]

    # gpu2 reinstalled: every command refuses it, naming both keys; rekey lets it back in.
    old = enrolment.fingerprint("gpu2")
    faults.fault(NAME, "gpu2", "reinstall")
    new = enrolment.fingerprint("gpu2")
    health = enrolment.ugro("health", "--now", "--json")
    assert health.returncode == 1
    assert old in health.stdout and new in health.stdout and "ugro node rekey gpu2" in health.stdout
    before = enrolment.files()
    wrong = enrolment.ugro("node", "rekey", "gpu2", "--fingerprint", old)
    assert wrong.returncode == 2 and enrolment.files() == before
    # At a terminal, as a person: both keys shown, "n" keeps the old, "y" takes the new.
    code, said = enrolment.at_a_terminal(["node", "rekey", "gpu2"], answer="n")
    assert code == 2 and old in said and new in said and "Is it the same?" in said
    assert enrolment.files() == before
    code, said = enrolment.at_a_terminal(["node", "rekey", "gpu2"], answer="y")
    assert code == 0 and f"gpu2's host key is now {new}" in said, said
    assert enrolment.ugro("health", "--now").returncode == 0


def test_a_node_without_rsync_or_an_answer_is_refused_and_nothing_written(
    enrolment: Enrolment,
) -> None:
    box = enrolment.box
    home = enrolment.home / "second"
    home.mkdir()
    other = Enrolment(box, home, home / "cluster.yaml")
    assert other.ugro("init", "--ip", box.master_address).returncode == 0
    gpu1 = box.nodes[0]
    faults.fault(NAME, gpu1.name, "hide", tool="rsync")
    try:
        before = other.files()
        lacking = other.add("gpu1")
        assert lacking.returncode == 2, lacking.stderr
        assert "gpu1 has no rsync: install it" in lacking.stderr
        assert [line for line in lacking.stderr.splitlines() if line.startswith("ugro:")] == [
            lacking.stderr.strip().splitlines()[-1]
        ]
        assert other.files() == before
    finally:
        faults.fault(NAME, gpu1.name, "heal")
    silent = other.ugro("node", "add", "gpu9", "--ip", "10.213.9.99", "--user", "ob")
    assert silent.returncode == 2 and "no SSH host key from 10.213.9.99" in silent.stderr
    assert other.files() == before
    # Off a terminal, without --fingerprint: nothing is trusted.
    unconfirmed = other.ugro("node", "add", "gpu1", "--ip", gpu1.address, "--user", gpu1.user)
    assert unconfirmed.returncode == 2 and "pass --fingerprint" in unconfirmed.stderr
    assert other.files() == before
    assert os.stat(home / ".config" / "ugro" / "known_hosts").st_mode & 0o777 == 0o600
