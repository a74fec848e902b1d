"""Slurm deployed by `ugro sandbox up --slurm` (the ugro_slurm role, as `ugro slurm up` runs it)
on a sandbox of its own: slurmctld on the master, a slurmd in each node's namespaces, one munge
key. Then it is used as a real Slurm: plain sbatch and submitit jobs run on the nodes; a drained
node shows in `ugro slurm status`; a job user the nodes lack is refused; `ugro slurm down`
leaves no daemon. Slurm is one per machine: this module and the ugro_slurm molecule scenario
run in one lane, one after the other.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_ugro
from tests.integration.conftest import sandbox_unavailable
from ugro.core.errors import UsageError
from ugro.sandbox import layout, lifecycle
from ugro.sandbox import slurm as sandbox_slurm
from ugro.sandbox.layout import Sandbox

pytestmark = pytest.mark.slow

NAME = "slurm"
SUBNET = "10.213.20.0/24"
NODES = {"gpu-master", "gpu1", "gpu2"}
DAEMONS = {"slurmctld", "slurmd", "munged"}


def sinfo() -> dict[str, str]:
    listed = subprocess.run(
        ["sinfo", "--noheader", "--Node", "--format", "%N %t"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(line.split() for line in listed.stdout.splitlines())


def daemons_running() -> set[str]:
    listed = subprocess.run(["ps", "-e", "-o", "comm="], capture_output=True, text=True)
    return DAEMONS & set(listed.stdout.split())


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    reason = sandbox_unavailable()
    try:
        sandbox_slurm.check_prerequisites()
    except UsageError as exc:
        reason = reason or exc.message
    if reason:
        pytest.skip(f"no Slurm sandbox: {reason}")
    if layout.load(NAME) is not None:
        lifecycle.down(NAME, echo=lambda _line: None)
    made = run_ugro("sandbox", "up", "--name", NAME, "--subnet", SUBNET, "--slurm", timeout=600)
    try:
        assert made.returncode == 0, made.stdout + made.stderr
        assert "Slurm is up on it" in made.stdout
        sandbox = layout.load(NAME)
        assert sandbox is not None
        yield sandbox
    finally:
        lifecycle.down(NAME, echo=lambda _line: None)


def test_slurm_up_gives_idle_nodes_and_a_second_up_changes_nothing(box: Sandbox) -> None:
    assert sinfo() == dict.fromkeys(NODES, "idle")
    again = run_ugro("--config", str(box.cluster_file), "slurm", "up")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing changed" in again.stdout
    status = run_ugro("--config", str(box.cluster_file), "slurm", "status", "--json")
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)["nodes"]
    assert {row["node"]: row["slurm"] for row in rows} == dict.fromkeys(NODES, "idle")


def test_plain_sbatch_runs_a_step_inside_each_node(box: Sandbox, tmp_path: Path) -> None:
    """Each step runs where its node's slurmd is: gpu1's and gpu2's in their own PID namespaces
    (their first process is the node's sshd), the master's on this machine."""
    out = tmp_path / "job.out"
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/bash\n"
        "#SBATCH --nodes=3\n#SBATCH --ntasks-per-node=1\n"
        "srun bash -c 'echo \"$SLURMD_NODENAME $(hostname) $(cat /proc/1/comm)\"'\n"
    )
    done = subprocess.run(
        ["sbatch", "--wait", f"--output={out}", str(script)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line.split()[1:] for line in out.read_text().splitlines()}
    assert set(lines) == NODES
    assert lines["gpu1"] == ["gpu1", "sshd"] and lines["gpu2"] == ["gpu2", "sshd"]


def test_submitit_submits_to_it(box: Sandbox, tmp_path: Path) -> None:
    submitit = pytest.importorskip("submitit")
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(slurm_partition="ugro", nodes=1, timeout_min=2)
    job = executor.submit(sum, [1, 2, 3])
    # Its result travels back through the folder, as on any Slurm; submitit's job.state reads
    # sacct, which needs slurmdbd (accounting), which UGRO does not deploy.
    assert job.result() == 6
    assert job.job_id.isdigit()


def test_a_drained_node_shows_in_status_with_its_reason(box: Sandbox) -> None:
    control = ["scontrol", "update", "NodeName=gpu2"]
    subprocess.run([*control, "State=DRAIN", "Reason=disk check"], check=True)
    try:
        status = run_ugro("--config", str(box.cluster_file), "slurm", "status")
        assert status.returncode == 1
        line = next(row for row in status.stdout.splitlines() if row.startswith("gpu2"))
        assert "drain" in line and "(disk check)" in line
    finally:
        subprocess.run([*control, "State=RESUME"], check=True)


def test_a_job_user_the_nodes_lack_is_refused_and_nothing_changes(
    box: Sandbox, tmp_path: Path
) -> None:
    config = yaml.safe_load(box.cluster_file.read_text())
    config["slurm"]["job_user"] = "nobodyhere"
    other = tmp_path / "cluster.yaml"
    other.write_text(yaml.safe_dump(config))
    before = Path(sandbox_slurm.CONF).read_bytes()
    refused = run_ugro("--config", str(other), "slurm", "up")
    assert refused.returncode != 0
    said = refused.stderr.strip().splitlines()[-1]
    assert "no user 'nobodyhere'" in said and "slurm.job_user" in said, said
    assert "Traceback" not in refused.stderr
    assert Path(sandbox_slurm.CONF).read_bytes() == before


def test_slurm_down_leaves_no_daemon_and_no_configuration(box: Sandbox) -> None:
    down = run_ugro("--config", str(box.cluster_file), "slurm", "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert daemons_running() == set()
    assert not Path(sandbox_slurm.CONF).exists()
    status = run_ugro("--config", str(box.cluster_file), "slurm", "status")
    assert status.returncode != 0 and "Slurm does not answer" in status.stderr
