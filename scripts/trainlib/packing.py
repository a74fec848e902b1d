"""Packing: short examples placed together in sequences of at most `--max-seq-length` tokens,
so a batch carries little padding, without any example seeing another.

Bins are filled best-fit decreasing (the longest examples first, each into the fullest bin it
still fits). In a packed sequence the position ids restart at 0 with each example and the batch
has no attention mask: transformers reads the restarts as example boundaries and keeps attention
within each example (a block-diagonal causal mask for SDPA and eager attention; variable-length
kernels for flash attention, with no mask at all). Each example's first label is already ignored
(trainlib.examples), so no example is trained to predict the next one's beginning.

A batch of packed sequences is padded to its longest; the padding is one more run of positions
from 0 (a sequence of its own, seen by nothing else) with ignored labels.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from trainlib.errors import TrainingSetupError
from trainlib.examples import IGNORE, Tokenized


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of `lengths` in bins whose sums stay within `capacity` (each length is at most
    capacity). Bins come out in the order they were opened; the examples in each, longest first."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    # Open bins by room left, (room, bin index), kept sorted: the fullest that fits is the first
    # whose room is at least the length.
    rooms: list[tuple[int, int]] = []
    for index in order:
        size = lengths[index]
        slot = bisect.bisect_left(rooms, (size, -1))
        if slot < len(rooms):
            room, which = rooms.pop(slot)
        else:
            room, which = capacity, len(bins)
            bins.append([])
        bins[which].append(index)
        if room - size > 0:
            bisect.insort(rooms, (room - size, which))
    return bins


def check_support() -> None:
    """Packing relies on transformers reading example boundaries from the position ids."""
    try:
        from transformers.masking_utils import find_packed_sequence_indices  # noqa: F401
    except ImportError:
        import transformers

        raise TrainingSetupError(
            f"--packing: transformers {transformers.__version__} would let packed examples "
            "attend to each other; it needs 4.53 or newer"
        ) from None


class PackedDataset(Dataset):
    """Each item a packed sequence: the bin's examples end to end, with position ids restarting
    at each."""

    def __init__(self, examples: Sequence[Tokenized], capacity: int) -> None:
        self.sequences = []
        for members in best_fit_decreasing([len(e.input_ids) for e in examples], capacity):
            ids: list[int] = []
            labels: list[int] = []
            positions: list[int] = []
            for index in members:
                example = examples[index]
                ids += example.input_ids
                labels += example.labels
                positions += range(len(example.input_ids))
            self.sequences.append((ids, labels, positions))
        self.example_count = len(examples)

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids, labels, positions = self.sequences[index]
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "position_ids": torch.tensor(positions, dtype=torch.long),
        }

    def lengths(self) -> list[int]:
        return [len(ids) for ids, _, _ in self.sequences]


class PackedCollator:
    """Packed sequences padded to the batch's longest (no attention mask: see the module's
    docstring)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        longest = max(item["input_ids"].numel() for item in items)
        batch = {
            "input_ids": torch.full((len(items), longest), self.pad_token_id, dtype=torch.long),
            "labels": torch.full((len(items), longest), IGNORE, dtype=torch.long),
            "position_ids": torch.zeros((len(items), longest), dtype=torch.long),
        }
        for row, item in enumerate(items):
            size = item["input_ids"].numel()
            batch["input_ids"][row, :size] = item["input_ids"]
            batch["labels"][row, :size] = item["labels"]
            batch["position_ids"][row, :size] = item["position_ids"]
            batch["position_ids"][row, size:] = torch.arange(longest - size)
        return batch


def real_tokens(batch: dict[str, torch.Tensor], pad_token_id: int) -> int:
    """The tokens of a packed batch that are not padding. A row's padding is its last run of
    positions (from the last restart at 0) when every id in it is the pad's: a real example
    never is (its one token would have no target, and such examples are dropped)."""
    total = 0
    for ids, positions in zip(batch["input_ids"], batch["position_ids"], strict=True):
        starts = (positions == 0).nonzero().flatten()
        last = int(starts[-1]) if starts.numel() else 0
        padded = last > 0 and bool((ids[last:] == pad_token_id).all())
        total += last if padded else ids.numel()
    return total


def padding_fraction(lengths: Sequence[int], batch_size: int) -> float:
    """The share of a pass's batch slots that would be padding, batches taken in order."""
    slots = used = 0
    for start in range(0, len(lengths), batch_size):
        batch = lengths[start : start + batch_size]
        slots += max(batch) * len(batch)
        used += sum(batch)
    return 1 - used / slots if slots else 0.0
