"""Examples as token ids and labels: the loss on completions only (or on every token), examples
longer than the model's window cut to it, and batches padded to their longest example.

Labels use -100 for tokens the loss ignores. An example's first token is never a target (the
model predicts token t from the tokens before it), so its label is -100 whatever the mode: the
count of targets is then the same whether examples are trained alone, padded or packed, and so
is a loss averaged over targets.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from trainlib.conversations import Segment

IGNORE = -100
log = logging.getLogger(__name__)


@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]


def tokenize(
    pieces: Sequence[Segment], tokenizer, *, eos: bool, train_on_prompts: bool, first: bool = True
) -> Tokenized:
    """Each piece tokenized on its own (so a completion's tokens are exactly its own), the
    tokenizer's beginning-of-sequence token first where it adds one (`first`; a chat template
    writes its own), `eos` appended when asked."""
    ids: list[int] = []
    labels: list[int] = []
    for index, (text, completion) in enumerate(pieces):
        special = first and index == 0
        piece = tokenizer(text, add_special_tokens=special)["input_ids"]
        ids += piece
        labels += piece if (completion or train_on_prompts) else [IGNORE] * len(piece)
    if eos and tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id)
    if labels:
        labels[0] = IGNORE
    return Tokenized(ids, labels)


@dataclass
class Truncation:
    """What cutting examples to the window did: the examples cut, and those dropped because
    nothing of their completion was left."""

    cut: int = 0
    dropped: int = 0

    def log(self, total: int, limit: int) -> None:
        if self.cut:
            log.warning(
                "%d of %d examples are longer than --max-seq-length %d: cut to it (%d of them "
                "dropped, no answer left within the limit)",
                self.cut,
                total,
                limit,
                self.dropped,
            )


def fit(examples: list[Tokenized], limit: int) -> tuple[list[Tokenized], Truncation]:
    """Examples cut to `limit` tokens; one whose targets all lie beyond it is dropped."""
    kept, report = [], Truncation()
    for example in examples:
        if len(example.input_ids) > limit:
            report.cut += 1
            example = Tokenized(example.input_ids[:limit], example.labels[:limit])
        if all(label == IGNORE for label in example.labels):
            report.dropped += 1
            continue
        kept.append(example)
    return kept, report


class ExampleDataset(Dataset):
    """One example per item, unpadded (the collator pads each batch to its longest)."""

    def __init__(self, examples: list[Tokenized]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        example = self.examples[index]
        return {
            "input_ids": torch.tensor(example.input_ids, dtype=torch.long),
            "labels": torch.tensor(example.labels, dtype=torch.long),
        }

    def lengths(self) -> list[int]:
        return [len(e.input_ids) for e in self.examples]


class PaddedCollator:
    """A batch padded on the right to its longest example: the pad token, an attention mask of
    zeros and ignored labels there (fixed-length blocks come out unpadded)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        longest = max(item["input_ids"].numel() for item in items)
        batch = {
            "input_ids": torch.full((len(items), longest), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(items), longest), dtype=torch.long),
            "labels": torch.full((len(items), longest), IGNORE, dtype=torch.long),
        }
        for row, item in enumerate(items):
            size = item["input_ids"].numel()
            batch["input_ids"][row, :size] = item["input_ids"]
            batch["attention_mask"][row, :size] = item.get(
                "attention_mask", torch.ones(size, dtype=torch.long)
            )
            batch["labels"][row, :size] = item["labels"]
        return batch
