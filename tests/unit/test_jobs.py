"""Jobs on the master: names, ids, history under concurrent writers, results; launch verdicts."""

from __future__ import annotations

import json
import multiprocessing
from datetime import datetime
from pathlib import Path

import pytest

from ugro.config import load_cluster_file
from ugro.core.errors import UsageError
from ugro.core.layout import check_job_ref, check_name, new_job_id
from ugro.launch.definition import TRAINING_FLAGS, training_args
from ugro.records.history import Jobs
from ugro.results.summary import job_results


@pytest.mark.parametrize(
    "bad",
    ["../x", "a;rm -rf ~", "", "x" * 65, ".", "..", "a b", "é", "-oProxyCommand", "-x", ".hidden"],
)
def test_bad_names(bad: str) -> None:
    with pytest.raises(UsageError, match="job name"):
        check_name(bad)
    with pytest.raises(UsageError, match="job name"):
        check_job_ref(bad)


def test_a_job_id_is_a_reference_even_when_longer_than_a_name() -> None:
    job_id = new_job_id("x" * 64)
    assert check_job_ref(job_id) == job_id


def test_job_id_is_name_and_timestamp() -> None:
    assert new_job_id("exp1", datetime(2026, 1, 20, 12, 0, 0)) == "exp1_20260120_120000"


def _append_many(args: tuple[str, int]) -> None:
    project, worker = args
    path = Path(project) / "cluster.yaml"
    jobs = Jobs(load_cluster_file(path))
    for i in range(50):
        jobs.note(f"w{worker}_20260101_00000{i % 10}", "tick", payload="x" * 2000, i=i)


def test_concurrent_writers_never_corrupt_the_history(cluster) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_append_many, [(str(cluster.source.parent), w) for w in range(4)])
    lines = cluster.paths.job_history.read_text().splitlines()
    assert len(lines) == 200
    assert all(json.loads(line)["payload"] == "x" * 2000 for line in lines)


def test_history_resolve_and_results(cluster) -> None:
    jobs = Jobs(cluster)
    for job_id in ("exp1_20260101_000000", "exp1_20260102_000000"):
        jobs.create(job_id)
        jobs.record(job_id, "launching", nodes=["m"])
        jobs.record(job_id, "running")
    jobs.record("exp1_20260102_000000", "succeeded")
    # A torn line (a writer killed mid-line) is skipped, never fatal.
    with open(cluster.paths.job_history, "a") as handle:
        handle.write('{"job_id": "broken", "sta')
    record = jobs.find("exp1")
    assert record.job_id == "exp1_20260102_000000" and record.state == "succeeded"
    assert jobs.nodes(record) == ["m"]
    assert jobs.find("exp1_20260101_000000").state == "running"
    with pytest.raises(UsageError, match="no job named 'exp9'"):
        jobs.find("exp9")
    with pytest.raises(UsageError, match="job name"):
        jobs.find("../etc")
    with pytest.raises(UsageError, match="already exists"):
        jobs.create("exp1_20260101_000000")

    directory = jobs.experiment_dir(record.job_id)
    lines = [
        {"kind": "train", "step": s, "loss": loss, "tokens_per_s": 100.0 * s}
        for s, loss in ((10, 3.0), (20, 2.0), (30, 2.5))
    ]
    lines.append({"kind": "eval", "step": 30, "eval_loss": 2.2})
    (directory / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (directory / "checkpoints" / "checkpoint-30").mkdir()
    (directory / "checkpoints" / "checkpoint-5").mkdir()
    (directory / "artifacts" / "adapter").mkdir()
    (directory / "nodes" / "gpu1").mkdir(parents=True)
    (directory / "nodes" / "gpu1" / "rank1.txt").write_text("written on gpu1")
    summary = job_results(jobs, record)
    assert summary["status"] == "succeeded" and summary["steps"] == 30
    assert (summary["final_loss"], summary["best_loss"], summary["final_eval_loss"]) == (
        2.5,
        2.0,
        2.2,
    )
    assert summary["tokens_per_s"] == 2500.0  # the first logging step's rate includes start-up
    assert summary["checkpoints"] == ["checkpoint-5", "checkpoint-30"]
    assert summary["artifacts"] == ["adapter"]
    assert summary["node_outputs"] == ["gpu1/rank1.txt"]


def test_training_args_take_cluster_yaml_then_the_command_line(cluster) -> None:
    args = training_args(
        cluster,
        overrides={"--model": None, "--epochs": 2.0},
        extra=("--max-steps", "5"),
    )
    pairs = dict(zip(args[::2], args[1::2], strict=False))
    assert pairs["--model"] == "tiny-llama"  # from cluster.yaml (the flag was not given)
    assert pairs["--epochs"] == "2.0"
    assert pairs["--max-seq-length"] == "64"
    assert pairs["--target-modules"] == "q_proj,k_proj"
    assert pairs["--ddp-timeout"] == "300"
    assert "--dataset" not in pairs  # unset in cluster.yaml: the script's defaults apply
    assert args[-2:] == ("--max-steps", "5")


def test_every_training_key_has_an_option() -> None:
    """cluster.yaml's training keys all reach train_production.py (none accepted and ignored),
    and every option they map to is one the script takes."""
    import sys

    from tests.conftest import REPO
    from ugro.config.schema import LoraSection, TrainingSection

    keys = {k for k in TrainingSection.model_fields if k != "lora"}
    keys |= {f"lora.{k}" for k in LoraSection.model_fields}
    assert set(TRAINING_FLAGS) == keys
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from trainlib.settings import build_parser
    finally:
        sys.path.remove(str(REPO / "scripts"))
    options = {o for action in build_parser("t")._actions for o in action.option_strings}
    assert set(TRAINING_FLAGS.values()) <= options


def test_the_jobs_table_keeps_ids_whole_and_times_short(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from ugro.display.jobs import jobs_table
    from ugro.records.history import JobRecord

    monkeypatch.setenv("TZ", "UTC")
    record = JobRecord(
        job_id="experiment_one_20261129_101010",
        name="experiment_one",
        state="succeeded",
        created_at="2026-11-29T10:10:10+00:00",
        updated_at="2026-11-29T10:12:34+00:00",
        detail={"nodes": ["gpu-master", "gpu1", "gpu2"]},
    )
    console = Console(width=80, record=True, color_system=None)
    console.print(jobs_table([record]))
    text = console.export_text()
    assert record.job_id in text  # on one line, whole: it is what `ugro logs` takes
    assert "2026-11-29 10:12:34" in text and "+00:00" not in text
    damaged = JobRecord(**{**record.__dict__, "updated_at": "not a time"})
    console.print(jobs_table([damaged]))
    assert "not a time" in console.export_text()  # a damaged history entry still shows


def test_a_jobs_script_is_ugros_by_name_or_path_else_shipped_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import REPO
    from ugro.launch.definition import JobScript

    ours = JobScript("scripts/train_single_test.py", REPO / "scripts" / "train_single_test.py")
    assert JobScript.choose("train_single_test.py") == ours
    monkeypatch.chdir(REPO)  # a path into scripts/ keeps its place beside trainlib/
    assert JobScript.choose("scripts/train_single_test.py") == ours
    own = tmp_path / "client.py"
    own.write_text("print('hi')\n")
    assert JobScript.choose(str(own)) == JobScript("client.py", own)
    for bad, message in ((tmp_path / "absent.py", "no such file"), (tmp_path, "no such file")):
        with pytest.raises(UsageError, match=message):
            JobScript.choose(str(bad))
    odd = tmp_path / "-x.py"
    odd.write_text("")
    with pytest.raises(UsageError, match=r"expected a \.py file named"):
        JobScript.choose(str(odd))


def test_a_job_records_its_ranks_and_its_default_accumulation(tmp_path: Path) -> None:
    from ugro.launch.definition import default_grad_accum, ranks_per_node

    commands = {
        "m": ["python", "-m", "torch.distributed.run", "--nproc-per-node", "2", "x.py"],
        "w": ["python", "-m", "torch.distributed.run", "--nproc-per-node", "1", "x.py"],
    }
    assert ranks_per_node(commands) == {"m": 2, "w": 1}
    code = tmp_path / "code" / "config"
    code.mkdir(parents=True)
    (code / "training_defaults.yaml").write_text("training:\n  gradient_accumulation_steps: 8\n")
    assert default_grad_accum(tmp_path) == 8
    assert default_grad_accum(tmp_path / "elsewhere") == 1
