"""The cache of resolved clusters (ugro.config.cache): fast for readers, never stale, never fatal,
and never trusting an entry someone else could have written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SEED_CLUSTER, run_ugro
from ugro.config import cache, load_cluster, load_cluster_file, local_cluster
from ugro.core.cluster import Cluster
from ugro.core.errors import ConfigError

# Loads the cluster in a fresh interpreter, works out what a launch takes from it, and says
# whether pydantic had to be imported.
_PROBE = """
import json, sys
from ugro.launch import definition as launch
from ugro.config import load_cluster
cluster = load_cluster(sys.argv[1] if len(sys.argv) > 1 else None)
args = launch.training_args(cluster, overrides={"--lr": 0.5}, extra=("--max-steps", "3"))
print(json.dumps({"pydantic": "pydantic" in sys.modules, "cluster": cluster.to_json(),
                  "args": args}))
"""


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv(cache.CACHE_ENV, str(directory))
    monkeypatch.setenv("USER", "tester")
    monkeypatch.chdir(tmp_path)  # no ./config/cluster.yaml: "no file" means the built-in cluster
    return directory


@pytest.fixture
def cluster_file(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(SEED_CLUSTER.read_text())
    return path


def load_in_subprocess(path: Path | None) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *([str(path)] if path else [])],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ.copy(),
    )
    return json.loads(done.stdout)


@pytest.mark.parametrize("which", ["file", "built-in"])
def test_second_load_skips_the_schema(cache_dir: Path, cluster_file: Path, which: str) -> None:
    path = cluster_file if which == "file" else None
    first = load_in_subprocess(path)
    second = load_in_subprocess(path)
    assert first["pydantic"] is True, "the first load must validate the file"
    assert second["pydantic"] is False, "an unchanged file must come from the cache"
    assert second == {**first, "pydantic": False}
    args = dict(zip(second["args"][::2], second["args"][1::2], strict=True))
    assert args["--lr"] == "0.5" and args["--ddp-timeout"] == "300"
    full = load_cluster_file(path) if path else local_cluster()
    assert Cluster.from_json(second["cluster"]) == full


def test_the_cache_stores_the_cluster_as_it_is(cache_dir: Path, cluster_file: Path) -> None:
    stored = load_cluster(cluster_file)
    assert stored == load_cluster_file(cluster_file)
    (entry,) = cache_dir.glob("*.json")
    assert Cluster.from_json(json.loads(entry.read_text())["cluster"]) == stored
    assert load_cluster(cluster_file) == stored
    load_cluster(None)
    assert load_cluster(None) == local_cluster()


def test_an_edit_is_seen_even_with_the_same_size_and_mtime(
    cache_dir: Path, cluster_file: Path
) -> None:
    assert load_cluster(cluster_file).name == "Home AI Lab"
    before = cluster_file.stat()
    cluster_file.write_text(cluster_file.read_text().replace("Home AI Lab", "Home AI Lob"))
    os.utime(cluster_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert cluster_file.stat().st_size == before.st_size
    assert load_cluster(cluster_file).name == "Home AI Lob"


def test_a_changed_environment_variable_is_seen(
    cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cluster.yaml"
    text = SEED_CLUSTER.read_text().replace('"~/projects/UGRO/data"', '"${UGRO_TEST_DATA}"')
    path.write_text(text)
    monkeypatch.setenv("UGRO_TEST_DATA", str(tmp_path / "one"))
    assert load_cluster(path).paths.data == tmp_path / "one"
    monkeypatch.setenv("UGRO_TEST_DATA", str(tmp_path / "two"))
    assert load_cluster(path).paths.data == tmp_path / "two"


def test_an_invalid_edit_still_fails_with_its_line(cache_dir: Path, cluster_file: Path) -> None:
    load_cluster(cluster_file)
    cluster_file.write_text(cluster_file.read_text().replace("rank: 1", "rank: one"))
    with pytest.raises(ConfigError, match=r"cluster\.yaml:\d+: workers\[0\]\.rank"):
        load_cluster(cluster_file)


@pytest.mark.parametrize("damage", ["garbage", "foreign key", "missing field", "wrong shape"])
def test_a_damaged_entry_is_ignored_and_rewritten(
    cache_dir: Path, cluster_file: Path, damage: str
) -> None:
    expected = load_cluster(cluster_file)
    (entry,) = cache_dir.glob("*.json")
    data = json.loads(entry.read_text())
    if damage == "garbage":
        entry.write_text("{not json")
    elif damage == "foreign key":
        entry.write_text(json.dumps({**data, "key": "0" * 64}))
    elif damage == "missing field":
        del data["cluster"]["paths"]
        entry.write_text(json.dumps(data))
    else:
        data["cluster"]["nodes"] = [{"name": "only-a-name"}]
        entry.write_text(json.dumps(data))
    assert load_cluster(cluster_file) == expected
    assert json.loads(entry.read_text())["key"] == data["key"]


def _poisoned_entry(cache_dir: Path, cluster_file: Path) -> Path:
    """A valid entry for the file whose cluster has been rewritten to point somewhere else."""
    load_cluster(cluster_file)
    (entry,) = cache_dir.glob("*.json")
    data = json.loads(entry.read_text())
    data["cluster"]["name"] = "poisoned"
    entry.write_text(json.dumps(data))
    return entry


def test_an_entry_others_can_write_is_not_used(cache_dir: Path, cluster_file: Path) -> None:
    entry = _poisoned_entry(cache_dir, cluster_file)
    assert load_cluster(cluster_file).name == "poisoned", "the private entry is used"
    _poisoned_entry(cache_dir, cluster_file)
    entry.chmod(0o666)
    assert load_cluster(cluster_file).name == "Home AI Lab"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_an_entry_owned_by_someone_else_is_not_used(cache_dir: Path, cluster_file: Path) -> None:
    entry = _poisoned_entry(cache_dir, cluster_file)
    os.chown(entry, 65534, 65534)  # nobody
    assert load_cluster(cluster_file).name == "Home AI Lab"


def test_an_entry_behind_a_symlink_is_not_followed(
    cache_dir: Path, cluster_file: Path, tmp_path: Path
) -> None:
    entry = _poisoned_entry(cache_dir, cluster_file)
    elsewhere = tmp_path / "elsewhere.json"
    entry.rename(elsewhere)
    entry.symlink_to(elsewhere)
    assert load_cluster(cluster_file).name == "Home AI Lab"


def test_an_unwritable_cache_is_not_an_error(
    tmp_path: Path, cluster_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(cache.CACHE_ENV, str(blocker / "cache"))
    assert load_cluster(cluster_file).name == "Home AI Lab"
    assert load_cluster(cluster_file).name == "Home AI Lab"


def test_entries_are_private(cache_dir: Path, cluster_file: Path) -> None:
    load_cluster(cluster_file)
    (entry,) = cache_dir.glob("*.json")
    assert entry.stat().st_mode & 0o077 == 0
    assert cache_dir.stat().st_mode & 0o077 == 0


def test_results_reads_a_finished_job_without_the_schema(
    cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ugro results` on a finished job: the same answer, with pydantic never imported."""
    monkeypatch.setenv("UGRO_HOME", str(tmp_path / "home"))
    data = tmp_path / "home" / "data"
    job = "exp1_20261129_101010"
    (data / "experiments" / job / "artifacts").mkdir(parents=True)
    (data / "experiments" / job / "metrics.jsonl").write_text(
        json.dumps({"kind": "train", "step": 5, "loss": 1.5}) + "\n"
    )
    history = [
        {"job_id": job, "name": "exp1", "state": "running", "at": "2026-11-29T10:10:10+00:00"},
        {"job_id": job, "name": "exp1", "state": "succeeded", "at": "2026-11-29T10:11:10+00:00"},
    ]
    (data / "job_history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    first = run_ugro("results", "exp1", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    trace = run_ugro("results", "exp1", "--json", cwd=tmp_path, env={"PYTHONVERBOSE": "1"})
    assert trace.returncode == 0, trace.stderr
    assert json.loads(trace.stdout) == json.loads(first.stdout)
    assert json.loads(first.stdout)["final_loss"] == 1.5
    assert "import 'pydantic'" not in trace.stderr
