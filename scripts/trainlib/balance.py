"""Batches balanced across unequal ranks: how many samples each rank takes per micro-step.

Every rank must run the same number of micro-steps per optimizer step (DDP's all-reduce pairs
them up: a rank with one micro-step more waits forever), so what differs between ranks is the
size of their micro-batches. A fast rank takes more samples, a rank with less memory no more than
fits, and the global batch stays what was asked for.

The gradient stays exact: the Trainer's `num_items_in_batch` path divides each rank's summed loss
by the tokens of the whole global batch (gathered over the ranks) and scales it by the world
size, which DDP's averaging all-reduce divides again, so an uneven split computes the gradient
of one process on the whole batch (tests/integration/test_balance.py checks it).

Modes (the launch's --balance, in UGRO_BALANCE):
  equal   every rank the same micro-batch (the Trainer's own sharding; nothing here runs)
  auto    each rank probes the largest micro-batch that fits its memory (cached per node, model
          and sequence length) and its samples per second (measured at each start: a node's speed
          changes with its load); shares follow the speeds within the fits
  manual  each node's micro-batch from cluster.yaml (UGRO_MICRO_BATCH)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trainlib.errors import TrainingSetupError

MODE_ENV = "UGRO_BALANCE"
MICRO_BATCH_ENV = "UGRO_MICRO_BATCH"
# The memory a rank may use, in GB. On a GPU the card's own memory is what counts, and this caps
# it; on a CPU node it is a declared budget (a stand-in for device memory, which a CPU lacks).
BUDGET_ENV = "UGRO_MEMORY_BUDGET_GB"
CACHE_ENV = "UGRO_BALANCE_CACHE"
MODES = ("equal", "auto", "manual")
# The probe stops doubling here: no rank needs more than the global batch anyway.
MAX_PROBE_BATCH = 256
# How long the throughput is measured: long enough to see a node whose CPU share is throttled in
# slices (cpulimit stops and continues it every few tens of milliseconds).
SPEED_SECONDS = 1.0


def mode() -> str:
    value = os.environ.get(MODE_ENV, "equal") or "equal"
    if value not in MODES:
        raise TrainingSetupError(f"{MODE_ENV}={value!r}: expected one of {', '.join(MODES)}")
    return value


# --- The split: a pure function ------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    micro_batches: list[int]  # per rank, in rank order
    accumulation: int  # micro-steps per optimizer step, the same on every rank

    @property
    def global_batch(self) -> int:
        return sum(self.micro_batches) * self.accumulation


def split(global_batch: int, fits: Sequence[int], speeds: Sequence[float]) -> Plan:
    """Micro-batches proportional to `speeds`, each within its rank's `fit` and at least 1, that
    add up to global_batch / accumulation, with the fewest micro-steps that allows."""
    ranks = len(fits)
    if ranks == 0 or len(speeds) != ranks:
        raise ValueError("one fit and one speed per rank")
    if min(fits) < 1:
        raise TrainingSetupError(
            f"rank {list(fits).index(min(fits))} cannot fit even one sample in its memory"
        )
    for accumulation in range(1, global_batch + 1):
        if global_batch % accumulation:
            continue
        per_step = global_batch // accumulation
        if per_step < ranks:
            break
        shares = _proportional(per_step, fits, speeds)
        if shares is not None:
            return Plan(shares, accumulation)
    raise TrainingSetupError(
        f"a global batch of {global_batch} cannot be split over {ranks} ranks with at least one "
        "sample each: ask for a global batch of at least the number of ranks"
    )


def _proportional(total: int, fits: Sequence[int], speeds: Sequence[float]) -> list[int] | None:
    """`total` samples in proportion to speeds, capped by fits (the capped ranks' excess goes to
    the others), rounded by largest remainder; None when the fits cannot hold it."""
    if sum(fits) < total:
        return None
    weights = [max(float(s), 1e-9) for s in speeds]
    ideal = [0.0] * len(fits)
    free = set(range(len(fits)))
    left = float(total)
    while free:
        weight = sum(weights[i] for i in free)
        capped = {i for i in free if left * weights[i] / weight >= fits[i]}
        if not capped:
            for i in free:
                ideal[i] = left * weights[i] / weight
            break
        for i in capped:
            ideal[i] = fits[i]
            left -= fits[i]
        free -= capped
    shares = [min(max(math.floor(x), 1), fits[i]) for i, x in enumerate(ideal)]
    # Hand out what rounding left (or take back what the floor of one sample added), largest
    # remainder first, never past a fit or under one sample.
    order = sorted(range(len(fits)), key=lambda i: ideal[i] - math.floor(ideal[i]), reverse=True)
    while sum(shares) < total:
        i = next((i for i in order if shares[i] < fits[i]), None)
        if i is None:
            return None
        shares[i] += 1
        order.remove(i)
        order.append(i)
    while sum(shares) > total:
        i = max((i for i in range(len(fits)) if shares[i] > 1), key=lambda i: shares[i] - ideal[i])
        shares[i] -= 1
    return shares


# --- Each rank's slice of every micro-step -------------------------------------------------------


class UnevenBatchSampler:
    """This rank's indices for each micro-step: the micro-step's global batch (micro_batches
    summed) cut at the ranks' offsets. Every rank yields the same number of batches, so every rank
    runs the same number of micro-steps; an epoch ends where a whole micro-step no longer fits."""

    def __init__(
        self,
        length: int,
        micro_batches: Sequence[int],
        rank: int,
        *,
        shuffle: bool,
        seed: int,
    ) -> None:
        self.length = length
        self.micro_batches = list(micro_batches)
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.offset = sum(self.micro_batches[:rank])
        self.per_step = sum(self.micro_batches)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length // self.per_step

    def __iter__(self) -> Iterator[list[int]]:
        import torch

        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)  # the same order on every rank
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = list(range(self.length))
        mine = self.micro_batches[self.rank]
        for step in range(len(self)):
            start = step * self.per_step + self.offset
            yield order[start : start + mine]


def epoch_loader(
    dataset: Any,
    sampler: UnevenBatchSampler,
    collate_fn: Any,
    *,
    workers: int = 0,
    pin_memory: bool = False,
) -> Any:
    """A DataLoader over an UnevenBatchSampler that passes set_epoch on (the Trainer calls it
    on the loader; accelerate's wrappers, which would, are not in the way here)."""
    from torch.utils.data import DataLoader

    class EpochLoader(DataLoader):  # type: ignore[misc]
        def set_epoch(self, epoch: int) -> None:
            sampler.set_epoch(epoch)

    return EpochLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_fn,
        num_workers=workers,
        pin_memory=pin_memory,
    )


# --- The probe: what fits, and how fast ----------------------------------------------------------


@dataclass
class Probe:
    fit: int  # the largest micro-batch tried that fits (powers of two up to the cap)
    samples_per_s: float
    memory_gb: float  # what the fit's step needed
    budget_gb: float  # what it was held to
    budget_source: str  # "device", "declared" (the stand-in on a CPU), or "ram"
    cached: bool = False


def probe(
    model: Any,
    sample: dict[str, Any],
    *,
    cap: int,
    cache_key: dict[str, Any],
    together: Any = None,
) -> Probe:
    """The largest micro-batch (1, 2, 4, ... up to cap) whose training step fits this rank's
    memory, cached on the node by cache_key; then its samples per second over SPEED_SECONDS.

    On a GPU a step that fits is one that ran without running out of memory, within the budget
    if one is set. On the CPU (no device memory to run out of) the step's memory is counted:
    the model's parameters, the trainable ones' gradients and Adam's two moments, and every
    tensor saved for the backward pass; it must stay within the declared budget (the stand-in),
    else 80% of the machine's available memory.

    `together` (a barrier) starts every rank's speed measurement at once: ranks that share a
    machine's cores (or a switch) then measure what training will see, not an idle machine."""
    import torch

    cuda = next(model.parameters()).is_cuda
    budget_gb, source = _budget(cuda)
    key = dict(cache_key, cap=cap, budget_gb=round(budget_gb, 3), device=_device_name(cuda))
    cached = _read_cache(key)
    if cached is not None:
        fit, memory = int(cached["fit"]), float(cached["memory_gb"])
    else:
        fit, memory = 0, 0.0
        for size in _sizes(cap):
            needed = _step_memory_gb(model, sample, size, cuda)
            if needed is None or needed > budget_gb:
                break
            fit, memory = size, needed
        model.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.empty_cache()
        if fit:
            _write_cache(key, {"fit": fit, "memory_gb": memory})
    if together is not None:
        together()
    speed = _samples_per_second(model, sample, fit) if fit else 0.0
    return Probe(fit, speed, round(memory, 4), round(budget_gb, 3), source, cached is not None)


def _sizes(cap: int) -> list[int]:
    """1, 2, 4, ... below cap, then cap itself."""
    sizes, size = [], 1
    while size < cap:
        sizes.append(size)
        size *= 2
    return [*sizes, cap]


def _budget(cuda: bool) -> tuple[float, str]:
    declared = os.environ.get(BUDGET_ENV)
    if declared:
        try:
            value = float(declared)
        except ValueError:
            raise TrainingSetupError(f"{BUDGET_ENV}={declared!r}: expected GB") from None
        if cuda:
            import torch

            return min(value, torch.cuda.get_device_properties(0).total_memory / 1e9), "declared"
        return value, "declared"
    if cuda:
        import torch

        # A tenth kept back: fragmentation over a long run, and evaluation's own buffers.
        free, _ = torch.cuda.mem_get_info()
        return free * 0.9 / 1e9, "device"
    import psutil

    return psutil.virtual_memory().available * 0.8 / 1e9, "ram"


def _device_name(cuda: bool) -> str:
    if cuda:
        import torch

        return str(torch.cuda.get_device_name(0))
    return f"cpu{os.cpu_count()}"


def _batch(sample: dict[str, Any], size: int, device: Any) -> dict[str, Any]:
    """The sample repeated `size` times: what fits does not depend on which samples they are."""
    return {
        key: value.unsqueeze(0).expand(size, *value.shape).contiguous().to(device)
        for key, value in sample.items()
    }


def _step_memory_gb(model: Any, sample: dict[str, Any], size: int, cuda: bool) -> float | None:
    """GB one training step at this micro-batch needs; None when it ran out of memory."""
    import torch

    device = next(model.parameters()).device
    model.train()
    model.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            loss = model(**_batch(sample, size, device)).loss
            loss.backward()
            torch.cuda.synchronize()
        except torch.cuda.OutOfMemoryError:
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            return None
        trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        # Adam's two moments come with the first optimizer step: count them now.
        return (torch.cuda.max_memory_allocated() + 2 * trainable) / 1e9
    saved = 0

    def pack(tensor: Any) -> Any:
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(**_batch(sample, size, device)).loss
    loss.backward()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return (weights + 3 * trainable + saved) / 1e9


def _samples_per_second(model: Any, sample: dict[str, Any], size: int) -> float:
    """Forward and backward at this micro-batch, repeated for SPEED_SECONDS (at least 3 steps)."""
    device = next(model.parameters()).device
    batch = _batch(sample, size, device)
    model.train()
    model(**batch).loss.backward()  # warm-up: first-call allocations and kernel choices
    steps, began = 0, time.perf_counter()
    while steps < 3 or time.perf_counter() - began < SPEED_SECONDS:
        model(**batch).loss.backward()
        steps += 1
    if next(model.parameters()).is_cuda:
        import torch

        torch.cuda.synchronize()
    elapsed = time.perf_counter() - began
    model.zero_grad(set_to_none=True)
    return steps * size / elapsed


def _cache_dir() -> Path:
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ugro", "balance"
    )
    return Path(base)


def _cache_path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return _cache_dir() / f"{digest}.json"


def _read_cache(key: dict[str, Any]) -> dict[str, Any] | None:
    try:
        data = json.loads(_cache_path(key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key or not isinstance(data.get("fit"), int):
        return None
    return data


def _write_cache(key: dict[str, Any], value: dict[str, Any]) -> None:
    path = _cache_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, **value, "at": time.time()}), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that cannot be written only costs the next start its probe


def describe(plan: Plan, probes: Sequence[dict[str, Any]], mode_: str) -> dict[str, Any]:
    """balance.json: the plan with each rank's share and why (written by the primary)."""
    ranks = []
    for rank, (share, seen) in enumerate(zip(plan.micro_batches, probes, strict=True)):
        ranks.append({"rank": rank, "micro_batch": share, **seen})
    return {
        "mode": mode_,
        "global_batch": plan.global_batch,
        "accumulation": plan.accumulation,
        "ranks": ranks,
    }


def probe_record(probe_: Probe | None, node: str, reason: str) -> dict[str, Any]:
    record: dict[str, Any] = {"node": node, "why": reason}
    if probe_ is not None:
        record.update(asdict(probe_))
        record["samples_per_s"] = round(probe_.samples_per_s, 3)
    return record
