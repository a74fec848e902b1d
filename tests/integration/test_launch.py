"""Launch across the 3-node sandbox: sync, real torchrun training, logs/results/status, failure,
stop, dry run and secrets. Every node is a real host (namespace + sshd), every rank a real
process; the tiny Llama trains on the CPU with gloo."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from tests.conftest import history_lines, run_ugro
from tests.integration.conftest import REFERENCE_STEPS, ssh_as
from ugro.config import load_cluster_file
from ugro.records.history import Jobs

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster_env(sandbox) -> dict[str, str]:
    """The sandbox's cluster, synced once for this module."""
    env = {"UGRO_CONFIG": str(sandbox.cluster_file)}
    done = run_ugro("sync", env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return env


def tagged(job_id: str) -> list[int]:
    """Every process on this machine (any node) carrying the job's tag."""
    needle = f"UGRO_JOB_ID={job_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def history(sandbox, job_id: str) -> list[str]:
    jobs = Jobs(load_cluster_file(sandbox.cluster_file))
    return [e["state"] for e in history_lines(jobs) if e["job_id"] == job_id and "state" in e]


def job_id_from(output: str) -> str:
    return output.split("Launched ", 1)[1].split(" ", 1)[0]


def write_script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def test_second_sync_changes_nothing(cluster_env) -> None:
    done = run_ugro("sync", env=cluster_env, timeout=900)
    assert done.returncode == 0, done.stderr
    assert "no changes: every node was already in sync" in done.stdout


def test_dry_run_starts_nothing(sandbox, cluster_env) -> None:
    experiments = Path(load_cluster_file(sandbox.cluster_file).paths.experiments)
    before = set(experiments.glob("*")) if experiments.exists() else set()
    for command in (["launch", "--name", "dry", "--dry-run"], ["run", "launch", "dry", "--check"]):
        done = run_ugro(*command, env=cluster_env)
        assert done.returncode == 0, done.stderr
        assert "nothing was started" in done.stdout
        lines = {
            line.split(":", 1)[0].strip(): line
            for line in done.stdout.splitlines()
            if "torch.distributed.run" in line
        }
        assert sorted(lines) == ["gpu-master", *(n.name for n in sandbox.nodes)]
        assert "is_host=1" in lines["gpu-master"]
        for node in sandbox.nodes:
            assert "is_host=0" in lines[node.name]
            assert f"--local-addr {node.address}" in lines[node.name]
            assert f"--rdzv-endpoint {sandbox.master_address}:" in lines[node.name]
    after = set(experiments.glob("*")) if experiments.exists() else set()
    assert after == before
    assert not [p for p in Path("/proc").glob("[0-9]*") if b"UGRO_JOB_ID=dry_" in _environ(p)]


def _environ(proc: Path) -> bytes:
    try:
        return (proc / "environ").read_bytes()
    except OSError:
        return b""


def test_launch_trains_and_everything_comes_home(sandbox, cluster_env, reference_run) -> None:
    """The session's reference run (tests/integration/conftest.py), launched and followed by
    `ugro launch` as a user would: what it printed, and everything it left."""
    done, job_id = reference_run.launched, reference_run.job_id
    assert history(sandbox, job_id) == ["launching", "running", "succeeded"]
    assert not tagged(job_id)
    # Not on a terminal: plain lines, one per event, and tables that do not break a path.
    assert f"{job_id}: step {REFERENCE_STEPS} loss" in done.stderr
    assert "launch: Work out this node's part of the job and its torchrun command" in done.stderr
    assert "Validating arguments" not in done.stderr
    cluster = load_cluster_file(sandbox.cluster_file)
    experiment = str(Jobs(cluster).experiment_dir(job_id))
    assert any(experiment in line for line in done.stdout.splitlines())
    launcher_log = (cluster.paths.logs / "launcher.log").read_text()
    assert f"launched {job_id}" in launcher_log and f"{job_id} succeeded" in launcher_log

    directory = Jobs(cluster).experiment_dir(job_id)
    config = json.loads((directory / "config.json").read_text())
    assert config["nodes"] == ["gpu-master", *(n.name for n in sandbox.nodes)]
    assert set(config["fingerprints"]) == set(config["nodes"])
    assert "torch.distributed.run" in config["commands"]["gpu1"]
    metrics = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in metrics if m["kind"] == "train"]
    assert [m["step"] for m in train] == list(range(2, REFERENCE_STEPS + 1, 2))
    assert len(train[0]["peak_memory_mb"]) == 3  # world size 3
    assert train[-1]["loss"] < train[0]["loss"]
    # Every rank's own figures, from the node it ran on; the cluster's are their sums.
    nodes = ["gpu-master", *(n.name for n in sandbox.nodes)]
    ranks = train[-1]["ranks"]
    assert [(r["rank"], r["node"], r["steps"]) for r in ranks] == [
        (i, n, 2) for i, n in enumerate(nodes)
    ]
    assert all(r["tokens"] > 0 and r["step_time_s"] > 0 and r["sync_s"] >= 0 for r in ranks)
    assert train[-1]["tokens"] == sum(r["tokens"] for r in ranks)
    assert list((directory / "tensorboard").glob("events.out.tfevents.*"))
    stored = json.loads((directory / "summary.json").read_text())
    assert (
        stored["status"] == "succeeded"
        and stored["steps"] == REFERENCE_STEPS
        and stored["tokens_per_s"] > 0
    )
    assert [r["node"] for r in stored["ranks"]] == nodes
    # Each node's telemetry came home with its logs, sampled while the job ran.
    for node in nodes:
        samples = (directory / "logs" / f"{node}.telemetry.jsonl").read_text().splitlines()
        assert samples and json.loads(samples[-1])["node"] == node
        assert json.loads(samples[-1])["job_rss_mb"] > 0
    for rank, node in enumerate(["gpu-master", *(n.name for n in sandbox.nodes)]):
        log = directory / "logs" / f"{node}.rank{rank}.log"
        assert log.stat().st_size > 0, log
        assert (directory / "logs" / f"{node}.rank{rank}.exit").read_text().strip() == "0"
        # What a person reads: the step lines once (the lead's), each warning once.
        lines = log.read_text().splitlines()
        assert any("'loss'" in line for line in lines) == (rank == 0), lines
        warned = [line for line in lines if "Warning: " in line]
        assert len(warned) == len(set(warned)), warned
    assert (
        directory / "checkpoints" / f"checkpoint-{REFERENCE_STEPS}" / "ugro_complete.json"
    ).exists()
    # The job carried its code: each node's job directory records what ran.
    node = sandbox.nodes[0]
    listing = ssh_as(
        sandbox, node, "ls", f"{node.home}/projects/UGRO/data/experiments/{job_id}/code/scripts"
    )
    assert "ugro_rank.py" in listing.stdout and "train_production.py" in listing.stdout

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(directory / "artifacts" / "base_model")
    model = PeftModel.from_pretrained(base, directory / "artifacts" / "adapter").eval()
    probe = torch.load(directory / "artifacts" / "probe.pt")
    with torch.no_grad():
        torch.testing.assert_close(
            model(input_ids=probe["input_ids"]).logits, probe["logits"], rtol=1e-5, atol=1e-5
        )

    results = run_ugro("results", "reference", "--json", env=cluster_env)
    summary = json.loads(results.stdout)
    assert summary["status"] == "succeeded" and summary["steps"] == REFERENCE_STEPS
    assert summary["ongoing"] is False and summary["status_line"] == "succeeded"
    assert summary["final_loss"] == train[-1]["loss"]
    assert (
        "adapter" in summary["artifacts"]
        and f"checkpoint-{REFERENCE_STEPS}" in summary["checkpoints"]
    )
    table = run_ugro("results", "reference", env=cluster_env).stdout
    assert "ranks (mean per step)" in table and "training time" in table
    rank2 = run_ugro("logs", "reference", "--rank", "2", env=cluster_env)
    assert rank2.returncode == 0 and rank2.stdout.strip()
    assert "[gpu2 r2] " not in rank2.stdout  # one rank's log is printed as it is
    merged = run_ugro("logs", job_id, env=cluster_env)
    assert "[gpu2 r2] " in merged.stdout and "[gpu-master r0] " in merged.stdout
    # Other tests ran jobs on this cluster since: ask for enough of the most recent.
    status = json.loads(run_ugro("status", "--json", "--recent", "1000", env=cluster_env).stdout)
    assert {j["job_id"]: j["state"] for j in status["jobs"]}[job_id] == "succeeded"


FAIL_ON_RANK_2 = """\
import os, sys, time
rank = int(os.environ["RANK"])
print(f"rank {rank} of {os.environ['WORLD_SIZE']} starting", flush=True)
if rank == 2:
    print("rank 2 fails on purpose", flush=True)
    sys.exit(1)
time.sleep(600)
"""


def test_a_failing_rank_fails_the_job_and_stops_the_rest(sandbox, cluster_env, tmp_path) -> None:
    script = write_script(tmp_path, "fail_on_rank2.py", FAIL_ON_RANK_2)
    started = time.monotonic()
    done = run_ugro(
        "launch", "--name", "failing", "--script", str(script), env=cluster_env, timeout=600
    )
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert time.monotonic() - started < 300
    job_id = job_id_from(done.stdout)
    assert history(sandbox, job_id)[-1] == "failed"
    assert "failed on gpu2 rank 2: exited with code 1" in done.stderr
    assert "rank 2 fails on purpose" in done.stderr
    assert not tagged(job_id)  # the ranks that were sleeping were stopped
    directory = Jobs(load_cluster_file(sandbox.cluster_file)).experiment_dir(job_id)
    assert "rank 2 fails on purpose" in (directory / "logs" / "gpu2.rank2.log").read_text()


# A script of the user's own, not train_production's: its curves are TensorBoard events that
# its lead rank writes somewhere under UGRO_OUTPUT_DIR, as any Trainer or SummaryWriter would.
WRITES_EVENTS = """\
import os
from torch.utils.tensorboard import SummaryWriter
if os.environ["UGRO_PRIMARY"] == "1" and os.environ["LOCAL_RANK"] == "0":
    writer = SummaryWriter(os.path.join(os.environ["UGRO_OUTPUT_DIR"], "runs", "mine"))
    for step in range(1, 8):
        writer.add_scalar("train/loss", 7.0 / step, step)
    writer.add_scalar("eval/loss", 1.5, 7)
    writer.add_scalar("train/train_runtime", 3.0, 9)
    writer.close()
"""


def test_a_scripts_tensorboard_events_are_its_curves(
    sandbox, cluster_env, reference_run, tmp_path
) -> None:
    script = write_script(tmp_path, "writes_events.py", WRITES_EVENTS)
    done = run_ugro(
        "launch", "--name", "evented", "--script", str(script), env=cluster_env, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads(run_ugro("results", "evented", "--json", env=cluster_env).stdout)
    assert results["metrics_source"] == "tensorboard"
    assert results["steps"] == 9 and results["final_loss"] == 1.0 and results["best_loss"] == 1.0
    assert results["final_eval_loss"] == 1.5
    # Its curves beside train_production's, and what differs between the two jobs.
    drawn = run_ugro(
        "plot", "reference", "evented", "-o", str(tmp_path / "both.png"), env=cluster_env
    )
    assert drawn.returncode == 0, drawn.stderr
    assert (tmp_path / "both.png").read_bytes().startswith(b"\x89PNG")
    assert "loss" in drawn.stdout and "step_time" in drawn.stdout
    compared = run_ugro("compare", "reference", "evented", "--json", env=cluster_env)
    differs = json.loads(compared.stdout)["differs"]
    assert {Path(v).name for v in differs["script"].values()} == {
        "train_production.py",
        "writes_events.py",
    }


SLEEPER = """\
import os, time
for i in range(600):
    print(f"rank {os.environ['RANK']} tick {i}", flush=True)
    time.sleep(1)
"""


def test_stop_mid_run_leaves_nothing(sandbox, cluster_env, tmp_path) -> None:
    script = write_script(tmp_path, "sleeper.py", SLEEPER)
    done = run_ugro(
        "launch", "--name", "sleepy", "--script", str(script), "--detach", env=cluster_env
    )
    assert done.returncode == 0, done.stderr
    job_id = job_id_from(done.stdout)
    deadline = time.monotonic() + 120
    # 3 agents, 3 workers and 3 telemetry samplers
    while len(tagged(job_id)) < 9 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(tagged(job_id)) >= 9
    stopped = run_ugro("stop", "sleepy", env=cluster_env)
    assert stopped.returncode == 0, stopped.stderr
    assert "none of the job's processes is left" in stopped.stdout
    assert not tagged(job_id)
    assert history(sandbox, job_id) == ["launching", "running", "stopped"]
    logs = run_ugro("logs", "sleepy", "--rank", "1", env=cluster_env)
    assert "rank 1 tick 0" in logs.stdout


TOKEN_CHECK = """\
import hashlib, os, sys
token = os.environ.get("HF_TOKEN", "")
print("token present:", bool(token), flush=True)
sys.exit(0 if hashlib.sha256(token.encode()).hexdigest() == sys.argv[1] else 3)
"""


def test_a_token_reaches_the_ranks_and_no_file(sandbox, cluster_env, tmp_path) -> None:
    canary = "hf_canary_" + os.urandom(8).hex()
    script = write_script(tmp_path, "token_check.py", TOKEN_CHECK)
    digest = hashlib.sha256(canary.encode()).hexdigest()
    done = run_ugro(
        "launch",
        "--name",
        "secret",
        "--script",
        str(script),
        "--",
        digest,
        env={**cluster_env, "HF_TOKEN": canary},
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert canary not in done.stdout + done.stderr
    cluster = load_cluster_file(sandbox.cluster_file)
    roots = [cluster.paths.project_root, *(Path(n.home) for n in sandbox.nodes), Path(tmp_path)]
    leaks = []
    for root in roots:
        for path in root.rglob("*"):
            readable = path.is_file() and not path.is_symlink() and path.stat().st_size < 5e7
            if readable and canary.encode() in path.read_bytes():
                leaks.append(str(path))
    assert leaks == []


def test_launch_refuses_on_drift_unless_allowed(sandbox, cluster_env) -> None:
    lock = Path(sandbox.nodes[-1].home) / "projects" / "UGRO" / "requirements.txt"
    original = lock.read_bytes()
    lock.write_bytes(original + b"# a node that drifted\n")
    try:
        refused = run_ugro("launch", "--name", "drifty", "--dry-run", env=cluster_env)
        assert refused.returncode == 1
        assert "not launching on drifting environments" in refused.stderr
        assert "lock differs across nodes" in refused.stderr
        assert f"{sandbox.nodes[-1].name}=" in refused.stderr
        allowed = run_ugro(
            "launch", "--name", "drifty", "--dry-run", "--allow-drift", env=cluster_env
        )
        assert allowed.returncode == 0, allowed.stderr
    finally:
        lock.write_bytes(original)


WRITE_OUTPUT = """\
import os
rank = os.environ["RANK"]
with open(os.path.join(os.environ["UGRO_OUTPUT_DIR"], f"rank{rank}.txt"), "w") as handle:
    handle.write(f"rank {rank} on {os.environ['UGRO_NODE']}")
"""


def test_a_never_synced_cluster_trains_and_every_nodes_output_comes_home(
    sandbox, cluster_env, tmp_path
) -> None:
    """A node without ugro's scripts (never synced, or wiped) still runs a job: the job carries
    its code. What each node's ranks write to UGRO_OUTPUT_DIR comes home, under nodes/<node>/
    for the workers; the job's machinery and code do not."""
    for node in sandbox.nodes:
        wiped = ssh_as(sandbox, node, "rm", "-rf", f"{node.home}/projects/UGRO/scripts")
        assert wiped.returncode == 0, wiped.stderr
    script = write_script(tmp_path, "write_output.py", WRITE_OUTPUT)
    done = run_ugro("launch", "--name", "outputs", "--script", str(script), env=cluster_env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    job_id = job_id_from(done.stdout)
    directory = Jobs(load_cluster_file(sandbox.cluster_file)).experiment_dir(job_id)
    assert (directory / "rank0.txt").read_text() == "rank 0 on gpu-master"
    for rank, node in enumerate(sandbox.nodes, start=1):
        outputs = directory / "nodes" / node.name
        assert (outputs / f"rank{rank}.txt").read_text() == f"rank {rank} on {node.name}"
        assert sorted(p.name for p in outputs.iterdir()) == [f"rank{rank}.txt"]
    results = json.loads(run_ugro("results", job_id, "--json", env=cluster_env).stdout)
    assert results["node_outputs"] == [
        f"{n.name}/rank{r}.txt" for r, n in enumerate(sandbox.nodes, 1)
    ]
    resync = run_ugro("sync", env=cluster_env, timeout=900)  # leave the nodes as they were
    assert resync.returncode == 0, resync.stderr
