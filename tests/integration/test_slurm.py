"""Slurm deployed by `ugro sandbox up --slurm` (the ugro_slurm role, as `ugro slurm up` runs it)
on a sandbox of its own: slurmctld on the master, a slurmd in each node's namespaces, one munge
key. Then it is used as a real Slurm: plain sbatch and submitit jobs run on the nodes; a drained
node shows in `ugro slurm status`; a job user the nodes lack is refused; `ugro slurm down`
leaves no daemon. Slurm is one per machine: this module and the ugro_slurm molecule scenario
run in one lane, one after the other.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import history_lines, run_ugro
from tests.integration.conftest import sandbox_unavailable
from tests.integration.jobkit import (
    assert_nothing_left,
    final,
    finals_of,
    jobs_of,
    wait_for,
    wait_running,
)
from ugro.core.errors import UsageError
from ugro.sandbox import faults, layout, lifecycle
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
    # sacct, which needs slurmdbd (accounting), which UGRO does not deploy, so job.result()
    # would wait forever on a job that never ran: the result file is waited for, bounded.
    try:
        wait_for(job.paths.result_pickle.exists, 90, f"submitit job {job.job_id}'s result")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{slurm_said(job.job_id)}") from None
    assert job.result() == 6
    assert job.job_id.isdigit()


def slurm_said(job_id: str) -> str:
    """What Slurm knows of a job and its nodes, for a test that waited on it in vain."""
    asked = [
        ["scontrol", "show", "job", job_id],
        ["sinfo", "--Node", "--long"],
        *(["tail", "-n", "15", str(log)] for log in sorted(Path("/var/log/slurm").glob("*.log"))),
    ]
    said = [subprocess.run(argv, capture_output=True, text=True) for argv in asked]
    return "\n".join(
        f"$ {' '.join(a)}\n{d.stdout}{d.stderr}" for a, d in zip(asked, said, strict=True)
    )


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


# A short LoRA job of the tiny model; its loss is the same whoever schedules it.
SHORT = ["--", "--max-steps", "3", "--logging-steps", "1", "--eval-strategy", "no",
         "--save-strategy", "no", "--seed", "11"]  # fmt: skip


@pytest.fixture(scope="module")
def synced(box: Sandbox) -> Sandbox:
    """The sandbox ready for jobs: no sync (a job carries its code; the nodes share the
    sandbox's environment), and retries after 1 s (the backoff is not what is tested)."""
    config = yaml.safe_load(box.cluster_file.read_text())
    config["cluster"]["communication"]["retry_backoff_seconds"] = 1
    box.cluster_file.write_text(yaml.safe_dump(config, sort_keys=False))
    return box


def ugro(box: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    return run_ugro("--config", str(box.cluster_file), *args)


def final_loss(box: Sandbox, job_id: str) -> float:
    summary = json.loads((jobs_of(box).experiment_dir(job_id) / "summary.json").read_text())
    return float(summary["final_loss"])


def slurm_times(slurm_ids: list[str]) -> dict[str, tuple[str, str, str]]:
    """Each job's (state, start, end) as Slurm keeps them for MinJobAge."""
    listed = subprocess.run(
        ["squeue", "--noheader", "--states=all", f"--jobs={','.join(slurm_ids)}",
         "--format=%i|%T|%S|%e"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = [line.split("|") for line in listed.stdout.split()]
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def test_three_submitted_jobs_run_in_turn_and_train_as_under_ugro(synced: Sandbox) -> None:
    """Three jobs that each need every node (the third asks for any 3, which Slurm picks):
    Slurm runs them one after another, `ugro queue` shows why the later ones wait, a fourth
    cancelled while it waits leaves Slurm's queue, and the first trains to the same loss as
    the job UGRO itself schedules with the same seed."""
    # The drained node of the test before returns to service a moment after its RESUME.
    wait_for(lambda: set(sinfo().values()) == {"idle"}, 30, "every node idle in Slurm")
    submitted = []
    for name, wants in (("q1", []), ("q2", []), ("q3", ["--count", "3"]), ("q4", [])):
        done = ugro(synced, "submit", "--name", name, "--scheduler", "slurm", *wants, *SHORT)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert " through Slurm (job " in done.stdout
        submitted.append(done.stdout.split()[1])
    assert "when Slurm allocates them" in done.stdout
    listed = ugro(synced, "queue", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["job_id"]: row for row in json.loads(listed.stdout)["queued"]}
    waiting = [rows[j] for j in submitted[1:] if rows.get(j, {}).get("slurm_state") == "PENDING"]
    # Slurm's words: the next job waits for Resources; one behind it may say Priority, or that
    # its nodes are "reserved for jobs in higher priority partitions".
    assert waiting and all(row["reason"] for row in waiting), rows
    assert {"Resources", "Priority"} & {row["reason"] for row in waiting}, rows
    assert rows[submitted[2]]["wants"] == "3 nodes"
    cancelled = ugro(synced, "cancel", submitted[3])
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    submitted.pop()
    records = [final(synced, job_id, timeout=240) for job_id in submitted]
    assert [r.state for r in records] == ["succeeded"] * 3
    assert records[2].detail["nodes"] == ["gpu-master", "gpu1", "gpu2"]  # as Slurm gave them
    slurm_ids = [str(r.detail["slurm_job"]) for r in records]
    q4_slurm = str(jobs_of(synced).find(done.stdout.split()[1]).detail["slurm_job"])
    times = slurm_times([*slurm_ids, q4_slurm])
    assert [times[i][0] for i in slurm_ids] == ["COMPLETED"] * 3
    assert times[q4_slurm][0] == "CANCELLED"
    for earlier, later in itertools.pairwise(slurm_ids):
        assert times[later][1] >= times[earlier][2], times  # one after another
    by_ugro = ugro(synced, "launch", "--name", "byugro", *SHORT)
    assert by_ugro.returncode == 0, by_ugro.stdout[-2000:] + by_ugro.stderr[-2000:]
    job_id = by_ugro.stdout.split("Launched ", 1)[1].split(" ", 1)[0]
    assert abs(final_loss(synced, job_id) - final_loss(synced, submitted[0])) <= 1e-3


def test_ugro_stop_cancels_it_in_slurm_and_leaves_nothing(synced: Sandbox) -> None:
    started = ugro(synced, "launch", "--name", "long", "--scheduler", "slurm", "--detach",
                   "--", "--max-steps", "500", "--logging-steps", "1", "--eval-strategy", "no",
                   "--save-strategy", "no")  # fmt: skip
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    job_id = started.stdout.split("Launched ", 1)[1].split(" ", 1)[0]
    wait_running(synced, job_id)
    slurm_id = str(jobs_of(synced).find(job_id).detail["slurm_job"])
    assert slurm_times([slurm_id])[slurm_id][0] == "RUNNING"  # squeue shows it
    stopped = ugro(synced, "stop", "long")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert jobs_of(synced).find(job_id).state == "stopped"
    assert_nothing_left(synced, job_id)
    wait_for(lambda: slurm_times([slurm_id])[slurm_id][0] == "CANCELLED", 30, "Slurm cancelled")


def test_a_partitioned_node_is_lost_and_the_retry_runs_on_the_nodes_left(synced: Sandbox) -> None:
    """A job for any 3 nodes: its retry asks Slurm for 2 or 3 of those that answer."""
    started = ugro(synced, "submit", "--name", "shrink", "--scheduler", "slurm", "--count", "3",
                   "--retries", "1", "--min-nodes", "2", "--", "--max-steps", "10",
                   "--grad-accum", "2", "--logging-steps", "2", "--eval-strategy", "no",
                   "--save-strategy", "steps", "--save-steps", "4")  # fmt: skip
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    job_id = started.stdout.split()[1]
    wait_running(synced, job_id, steps=3)
    faults.fault(synced.name, "gpu2", "partition")
    try:
        record = final(synced, job_id, timeout=240)
    finally:
        faults.fault(synced.name, "gpu2", "heal")
    assert (record.state, record.attempt) == ("succeeded", 2)
    assert finals_of(synced, job_id) == [(1, "lost"), (2, "succeeded")]
    lost = next(
        e
        for e in history_lines(jobs_of(synced))
        if e["job_id"] == job_id and e.get("state") == "lost"
    )
    assert (lost["failure"]["node"], lost["failure"]["cause"]) == ("gpu2", "unreachable")
    assert lost["timeline"]["detected"] - lost["timeline"]["ended"] <= 15
    assert record.detail["nodes"] == ["gpu-master", "gpu1"]
    retried = (jobs_of(synced).experiment_dir(job_id) / "slurm" / "attempt-2.sbatch").read_text()
    assert "#SBATCH --nodes=2\n#SBATCH --exclude=gpu2\n" in retried
    # Slurm gave up on gpu2 while it was cut off; `ugro slurm up` returns it to service.
    assert ugro(synced, "slurm", "up").returncode == 0
    assert sinfo()["gpu2"] == "idle"


def test_a_job_for_a_node_slurm_reports_down_or_another_user_is_refused_naming_it(
    synced: Sandbox, tmp_path: Path
) -> None:
    # The last test's job ends in Slurm a moment after UGRO records it (COMPLETING).
    wait_for(lambda: set(sinfo().values()) == {"idle"}, 30, "every node idle in Slurm")
    control = ["scontrol", "update", "NodeName=gpu1"]
    subprocess.run([*control, "State=DOWN", "Reason=fan failure"], check=True)
    try:
        refused = ugro(synced, "launch", "--name", "nope", "--scheduler", "slurm", *SHORT)
    finally:
        subprocess.run([*control, "State=RESUME"], check=True)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    said = refused.stderr.strip().splitlines()[-1]
    assert "gpu1: Slurm reports it down (fan failure)" in said, said
    # The guide's cluster: a user of its own on gpu2, while Slurm runs jobs as the master's.
    config = yaml.safe_load(synced.cluster_file.read_text())
    config["workers"][1]["user"] = "ollie"
    other = tmp_path / "cluster.yaml"
    other.write_text(yaml.safe_dump(config))
    refused = run_ugro("--config", str(other), "launch", "--name", "nope", "--scheduler", "slurm",
                       *SHORT)  # fmt: skip
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    said = refused.stderr.strip().splitlines()[-1]
    assert "gpu2: cluster.yaml logs in as 'ollie', but Slurm runs jobs as 'root'" in said, said


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
    # A job for Slurm now is refused in one line, before anything starts.
    refused = run_ugro("--config", str(box.cluster_file), "launch", "--name", "late",
                       "--scheduler", "slurm", *SHORT)  # fmt: skip
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "`ugro slurm up`" in refused.stderr.strip().splitlines()[-1]
