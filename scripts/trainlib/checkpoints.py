"""Checkpoints that are sealed only once fully written, and found again on resume.

The Trainer writes `checkpoint-N/` (adapter, optimizer, scheduler, RNG state, trainer state) in
place; a run killed mid-write leaves a half-written directory. After each save, every file's size
and SHA-256 go into `ugro_complete.json`; resume takes the newest checkpoint whose files still
match it, so a half-written or truncated one is skipped, never loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

SEAL = "ugro_complete.json"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")

log = logging.getLogger(__name__)


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def seal(directory: Path, step: int) -> None:
    files = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.name != SEAL:
            files[str(path.relative_to(directory))] = {
                "size": path.stat().st_size,
                "sha256": _digest(path),
            }
    tmp = directory / (SEAL + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump({"step": step, "files": files}, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, directory / SEAL)


def is_complete(directory: Path) -> bool:
    try:
        manifest = json.loads((directory / SEAL).read_text(encoding="utf-8"))
        for name, expected in manifest["files"].items():
            path = directory / name
            if path.stat().st_size != expected["size"] or _digest(path) != expected["sha256"]:
                log.warning(
                    "checkpoint %s: %s does not match its seal; skipping it", directory, name
                )
                return False
        return bool(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def complete_steps(root: Path) -> list[int]:
    """Steps of the sealed, intact checkpoints under `root`, oldest first."""
    steps = []
    if root.is_dir():
        for entry in root.iterdir():
            match = _CHECKPOINT.fullmatch(entry.name)
            if match and entry.is_dir():
                if is_complete(entry):
                    steps.append(int(match.group(1)))
                else:
                    log.warning("checkpoint %s is incomplete; it will not be resumed from", entry)
    return sorted(steps)


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"checkpoint-{step}"


def holds_every_step(directory: str | Path, max_steps: int, epochs: float) -> bool:
    """Whether the checkpoint already holds every step this run asks for (`max_steps` when
    above 0, else `epochs`, as the checkpoint's own run computed its steps from them).
    Resumed from such a checkpoint, the Trainer would still train one more step (seen with
    transformers 5.25: its loop checks the limit only after a step), changing the finished
    adapter: a retry after the last checkpoint must train nothing. A run asking for more
    (a higher --max-steps or --epochs) trains on."""
    try:
        state = json.loads((Path(directory) / "trainer_state.json").read_text(encoding="utf-8"))
        done = int(state["global_step"])
        if max_steps > 0:
            return done >= max_steps
        return 0 < int(state["max_steps"]) <= done and float(state["num_train_epochs"]) == epochs
    except (OSError, ValueError, KeyError, TypeError):
        return False
