"""Trainer callbacks: metrics.jsonl, checkpoint seals, and the rank's progress heartbeat."""

from __future__ import annotations

import json
import math
import os
import resource
import time
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from trainlib import checkpoints


def peak_memory_mb() -> float:
    """This rank's peak memory: CUDA allocations on a GPU, resident set size on the CPU."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def gather_object(value):
    """`value` from every rank, in rank order (just `[value]` when not distributed)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        values: list = [None] * dist.get_world_size()
        dist.all_gather_object(values, value)
        return values
    return [value]


class MetricsCallback(TrainerCallback):
    """One JSON line per log event: train steps, evaluations and the closing summary.

    Every rank takes part (peak memory is gathered from all of them); rank 0 writes.
    """

    def __init__(self, path: Path, *, tokens_per_step: int, samples_per_step: int, main: bool):
        self.path = path
        self.tokens_per_step = tokens_per_step
        self.samples_per_step = samples_per_step
        self.main = main
        self.started = time.monotonic()
        self.last = (self.started, 0)

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()
        self.last = (self.started, state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        memory = [float(m) for m in gather_object(peak_memory_mb())]
        if not self.main:
            return
        now = time.monotonic()
        record = {
            "step": state.global_step,
            "epoch": logs.pop("epoch", state.epoch),
            "elapsed_s": round(now - self.started, 3),
            "peak_memory_mb": [round(m, 1) for m in memory],
        }
        if "loss" in logs:
            then, step = self.last
            steps, seconds = state.global_step - step, max(now - then, 1e-9)
            record.update(
                kind="train",
                loss=logs.pop("loss"),
                learning_rate=logs.pop("learning_rate", None),
                grad_norm=logs.pop("grad_norm", None),
                tokens_per_s=round(steps * self.tokens_per_step / seconds, 1),
                samples_per_s=round(steps * self.samples_per_step / seconds, 2),
            )
            self.last = (now, state.global_step)
        elif "eval_loss" in logs:
            record["kind"] = "eval"
        else:
            record["kind"] = "summary"
        record.update({k: v for k, v in logs.items() if _plain(v)})
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def _plain(value) -> bool:
    return isinstance(value, (int, str)) or (isinstance(value, float) and math.isfinite(value))


class SealCheckpoints(TrainerCallback):
    """Seal each checkpoint once every rank has written its part of it."""

    def __init__(self, root: Path, *, local_main: bool):
        self.root = root
        self.local_main = local_main

    def on_save(self, args, state, control, **kwargs):
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        directory = checkpoints.checkpoint_dir(self.root, state.global_step)
        if self.local_main and directory.is_dir():
            checkpoints.seal(directory, state.global_step)
            os.sync()


class ProgressCallback(TrainerCallback):
    """After each step, {"step": N, "at": unix time} in UGRO_PROGRESS_FILE (set by ugro_rank.py):
    the heartbeat by which the job's controller tells a hung rank from a slow one. Written
    atomically (a reader never sees half a file); nothing when the variable is unset."""

    def __init__(self, path: str | None):
        self.path = path

    def beat(self, step: int) -> None:
        if not self.path:
            return
        temporary = f"{self.path}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": step, "at": time.time()}))
        os.replace(temporary, self.path)

    def on_train_begin(self, args, state, control, **kwargs):
        self.beat(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self.beat(state.global_step)
