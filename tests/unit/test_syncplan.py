"""The sync's guard (ugro.syncplan) on what real rsync itemizes: a scripts directory that holds
files ugro did not put there is never emptied or overwritten."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ugro.nodes.sync_preview import scripts_preview


def preview(source: Path, target: Path, manifest: list[str]) -> dict:
    """The role's dry run, for real: every file itemized, deletions included."""
    done = subprocess.run(
        [
            "rsync",
            "--archive",
            "--delete",
            "--exclude=/.ugro-sync-manifest",
            "--dry-run",
            "-ii",
            f"{source}/",
            f"{target}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return scripts_preview(done.stdout.splitlines(), manifest)


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    return root


def test_an_empty_or_missing_target_is_ours(tmp_path: Path) -> None:
    source = tree(tmp_path / "src", {"train.py": "a", "trainlib/data.py": "b"})
    result = preview(source, tmp_path / "missing", [])
    assert result == {"shipped": ["train.py", "trainlib/", "trainlib/data.py"], "foreign": []}


def test_a_shared_directory_is_refused(tmp_path: Path) -> None:
    source = tree(tmp_path / "src", {"train.py": "a"})
    shared = tree(tmp_path / "bin", {"backup.sh": "mine", "notes/todo.txt": "mine too"})
    assert preview(source, shared, [])["foreign"] == ["backup.sh", "notes/", "notes/todo.txt"]


def test_a_users_file_of_the_same_name_is_not_overwritten(tmp_path: Path) -> None:
    source = tree(tmp_path / "src", {"train.py": "ugro's"})
    target = tree(tmp_path / "dst", {"train.py": "the user's own, different"})
    assert preview(source, target, [])["foreign"] == ["train.py"]


def test_what_an_earlier_sync_put_there_may_go(tmp_path: Path) -> None:
    source = tree(tmp_path / "src", {"train.py": "new", "keep.py": "same"})
    target = tree(tmp_path / "dst", {"train.py": "old", "keep.py": "same", "gone.py": "old"})
    result = preview(source, target, ["gone.py", "keep.py", "train.py"])
    assert result == {"shipped": ["keep.py", "train.py"], "foreign": []}


def test_an_identical_file_is_adopted(tmp_path: Path) -> None:
    """A file equal to ugro's (a copy the user made by hand) loses nothing by being ours."""
    source = tree(tmp_path / "src", {"train.py": "same"})
    target = tmp_path / "dst"
    target.mkdir()
    subprocess.run(["cp", "-p", str(source / "train.py"), str(target)], check=True)
    assert preview(source, target, []) == {"shipped": ["train.py"], "foreign": []}
