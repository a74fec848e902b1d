"""Where each rank's time goes between two log events: fetching data, waiting for its peers in
the gradient all-reduce, and the rest (its own forward, backward and optimizer step).

In DDP every rank's step takes as long as the slowest one's, because the all-reduce waits for
it: step times alone cannot show a straggler. What shows it is the time a rank spends *not*
waiting (`work_s`): the slow rank's is long, and its peers spend the difference in `sync_s`.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import torch

from trainlib.packing import real_tokens

# Counted from the attention mask where a batch has one (padding is not work), else every id.
_TOKEN_KEYS = ("attention_mask", "input_ids")


def batch_size_and_tokens(batch: Any, pad_token_id: int | None = None) -> tuple[int, int]:
    if not isinstance(batch, dict):
        return 0, 0
    if "position_ids" in batch and "attention_mask" not in batch and pad_token_id is not None:
        # Packed sequences carry no mask (trainlib.packing): their padding is found by its ids.
        return int(batch["input_ids"].shape[0]), real_tokens(batch, pad_token_id)
    for key in _TOKEN_KEYS:
        value = batch.get(key)
        if isinstance(value, torch.Tensor) and value.dim() >= 1:
            tokens = int(value.sum()) if key == "attention_mask" else value.numel()
            return int(value.shape[0]), tokens
    return 0, 0


class RankClock:
    """This rank's counts since the last log event (reset by `take`)."""

    def __init__(self, pad_token_id: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.node = os.environ.get("UGRO_NODE") or socket.gethostname()
        self.rank = int(os.environ.get("RANK", 0))
        self._open_since: float | None = None
        self._gpu_syncs: list[tuple[Any, Any]] = []
        self._reset()

    def _reset(self) -> None:
        self.steps = 0
        self.step_s = self.data_s = self.sync_s = 0.0
        self.tokens = self.samples = 0

    # A step opens when its first batch is asked for (the Trainer fetches all of an optimizer
    # step's micro-batches before on_step_begin) and closes at on_step_end: logging, saving and
    # evaluating happen after that, so they are not counted as training time.
    def fetched(self, batch: Any, began: float, seconds: float) -> None:
        if self._open_since is None:
            self._open_since = began
        self.data_s += seconds
        samples, tokens = batch_size_and_tokens(batch, self.pad_token_id)
        self.samples += samples
        self.tokens += tokens

    def step_ended(self) -> None:
        now = time.perf_counter()
        if self._open_since is not None:
            self.step_s += now - self._open_since
            self.steps += 1
        self._open_since = None

    def synced(self, seconds: float) -> None:
        self.sync_s += seconds  # from a communication thread: one float add, atomic under the GIL

    def synced_on_gpu(self, start: Any, end: Any) -> None:
        """An all-reduce timed by CUDA events, read when the interval is taken (by then the
        step has finished on the device)."""
        self._gpu_syncs.append((start, end))

    def take(self, peak_memory_mb: float) -> dict[str, Any]:
        """This interval's figures, per step where a mean says more; and start the next one."""
        for start, end in self._gpu_syncs:
            end.synchronize()
            self.sync_s += start.elapsed_time(end) / 1000  # milliseconds
        self._gpu_syncs.clear()
        steps = max(self.steps, 1)
        figures = {
            "rank": self.rank,
            "node": self.node,
            "steps": self.steps,
            "train_s": round(self.step_s, 4),
            "step_time_s": round(self.step_s / steps, 4),
            "data_s": round(self.data_s / steps, 4),
            "sync_s": round(self.sync_s / steps, 4),
            "work_s": round(max(self.step_s - self.sync_s - self.data_s, 0.0) / steps, 4),
            "tokens": self.tokens,
            "samples": self.samples,
            "peak_memory_mb": round(peak_memory_mb, 1),
        }
        self._reset()
        return figures


class TimedBatches:
    """An epoch iterator that tells the clock how long each batch took to come, and its size."""

    def __init__(self, batches: Any, clock: RankClock) -> None:
        self.batches = batches
        self.clock = clock

    def __iter__(self) -> TimedBatches:
        return self

    def __next__(self) -> Any:
        began = time.perf_counter()
        batch = next(self.batches)
        self.clock.fetched(batch, began, time.perf_counter() - began)
        return batch


def time_gradient_sync(ddp_model: Any, clock: RankClock) -> bool:
    """Time each gradient bucket's all-reduce on this rank: from the moment its gradients are
    ready here to the moment every rank's have arrived, so the wait for a slower rank is in it.
    The hook is DDP's own averaging all-reduce; only the clock is added. False where the model
    is not DDP-wrapped (one process: there is nothing to wait for)."""
    from torch.nn.parallel import DistributedDataParallel

    if not isinstance(ddp_model, DistributedDataParallel):
        return False
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    # No annotations: DDP checks them against dist.GradBucket and torch.futures.Future, which
    # this module's postponed (string) annotations would never equal.
    def timed_allreduce(state, bucket):  # type: ignore[no-untyped-def]
        if bucket.buffer().is_cuda:
            # NCCL's future completes when the collective is queued, not done: time it on the
            # device instead. The start event passes when this bucket's gradients are computed;
            # the end event, recorded in the callback (whose current stream follows the
            # collective), when every rank's have arrived.
            start = torch.cuda.Event(enable_timing=True)
            start.record()

            def done_on_gpu(future):  # type: ignore[no-untyped-def]
                end = torch.cuda.Event(enable_timing=True)
                end.record()
                clock.synced_on_gpu(start, end)
                return future.value()

            return default_hooks.allreduce_hook(state, bucket).then(done_on_gpu)
        began = time.perf_counter()

        def done(future):  # type: ignore[no-untyped-def]
            clock.synced(time.perf_counter() - began)
            return future.value()

        return default_hooks.allreduce_hook(state, bucket).then(done)

    ddp_model.register_comm_hook(None, timed_allreduce)
    return True
