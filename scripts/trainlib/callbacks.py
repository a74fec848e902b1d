"""Trainer callbacks: metrics (metrics.jsonl, TensorBoard), checkpoint seals, and the rank's
progress heartbeat."""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import time
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from trainlib import checkpoints
from trainlib.rankclock import RankClock

log = logging.getLogger(__name__)


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
    """One JSON line per log event (train steps, evaluations, the closing summary) in
    metrics.jsonl, and the same scalars as TensorBoard events under tensorboard/.

    Every rank takes part: each train line carries every rank's figures from its RankClock
    (gathered; see trainlib.rankclock), and the cluster's tokens and samples per second are
    their sums over the interval's training time. The primary rank writes.
    """

    def __init__(self, path: Path, *, clock: RankClock, main: bool, tensorboard: Path | None):
        self.path = path
        self.clock = clock
        self.main = main
        self.tensorboard_dir = tensorboard
        self.writer = None
        self.started = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()
        if self.main and self.tensorboard_dir is not None:
            self.writer = _summary_writer(self.tensorboard_dir)

    def on_step_end(self, args, state, control, **kwargs):
        self.clock.step_ended()

    def on_train_end(self, args, state, control, **kwargs):
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        train = "loss" in logs
        if train:
            ranks = [dict(r) for r in gather_object(self.clock.take(peak_memory_mb()))]
            memory = [r["peak_memory_mb"] for r in ranks]
        else:
            ranks, memory = [], [float(m) for m in gather_object(peak_memory_mb())]
        if not self.main:
            return
        record = {
            "step": state.global_step,
            "epoch": logs.pop("epoch", state.epoch),
            "elapsed_s": round(time.monotonic() - self.started, 3),
            "peak_memory_mb": [round(m, 1) for m in memory],
        }
        if train:
            # Every rank's step ends with the same all-reduce, so the interval's wall time is
            # the longest any rank counted; the work is what all of them did.
            seconds = max(max(r["train_s"] for r in ranks), 1e-9)
            tokens, samples = sum(r["tokens"] for r in ranks), sum(r["samples"] for r in ranks)
            record.update(
                kind="train",
                loss=logs.pop("loss"),
                learning_rate=logs.pop("learning_rate", None),
                grad_norm=logs.pop("grad_norm", None),
                train_s=round(seconds, 4),
                tokens=tokens,
                samples=samples,
                tokens_per_s=round(tokens / seconds, 1),
                samples_per_s=round(samples / seconds, 2),
                ranks=ranks,
            )
        elif "eval_loss" in logs:
            record["kind"] = "eval"
        else:
            record["kind"] = "summary"
        record.update({k: v for k, v in logs.items() if _plain(v)})
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            _write_scalars(self.writer, record)


def _summary_writer(directory: Path):
    """A TensorBoard writer, or None (with one warning) where the tensorboard package is missing:
    the job's metrics.jsonl has everything, the event files are for TensorBoard's own views.

    Written here rather than by the Trainer's TensorBoardCallback because that one writes from
    global rank 0, which c10d may place on any node; this one writes from the primary rank, so
    the events land in the experiment directory with the rest of the job's metrics."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        log.warning("no TensorBoard event files: %s (pip install tensorboard)", exc)
        return None
    return SummaryWriter(log_dir=str(directory))


def _write_scalars(writer, record: dict) -> None:
    step = record["step"]
    kind = record.get("kind")
    if kind == "train":
        for key in ("loss", "learning_rate", "grad_norm", "tokens_per_s", "samples_per_s"):
            if isinstance(record.get(key), (int, float)):
                writer.add_scalar(f"train/{key}", record[key], step)
        for rank in record.get("ranks", []):
            for key in ("step_time_s", "work_s", "sync_s", "data_s", "peak_memory_mb"):
                writer.add_scalar(f"rank{rank['rank']}/{key}", rank[key], step)
    elif kind == "eval":
        for key, value in record.items():
            if key.startswith("eval_") and isinstance(value, (int, float)):
                writer.add_scalar(f"eval/{key[5:]}", value, step)
    writer.flush()


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


class GradientDump(TrainerCallback):
    """The first optimizer step's gradients (the trainable parameters', after DDP's all-reduce,
    before the optimizer uses them), saved by the primary to `path` when UGRO_GRADIENT_DUMP
    names one: how a balanced split is checked against one process on the whole batch."""

    def __init__(self, path: str | None, *, main: bool):
        self.path = path if main else None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.path and state.global_step == 0 and model is not None:
            grads = {
                name: p.grad.detach().float().cpu().clone()
                for name, p in model.named_parameters()
                if p.requires_grad and p.grad is not None
            }
            torch.save(grads, self.path)
