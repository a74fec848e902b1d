"""Text in, fixed-length token blocks out: the built-in corpus, local files and hub data sets."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from torch.utils.data import Dataset

from trainlib.errors import TrainingSetupError

BUILTIN = "builtin"
# Hub data sets need a configuration name; these are the usual ones.
HUB_CONFIGS = {"wikitext": "wikitext-2-raw-v1"}

_SUBJECTS = [
    "the cluster",
    "a worker",
    "the master",
    "every node",
    "the scheduler",
    "a gpu",
    "the model",
    "our job",
    "the network",
    "each rank",
]
_VERBS = ["trains", "syncs", "checks", "launches", "collects", "measures", "restarts", "reports"]
_OBJECTS = [
    "the adapter",
    "its logs",
    "the metrics",
    "a checkpoint",
    "the gradients",
    "the loss",
    "every batch",
    "the results",
]
_TAILS = [
    "before dawn",
    "over ssh",
    "on the lan",
    "without a hitch",
    "in parallel",
    "with care",
    "after the sync",
    "at full speed",
]


def builtin_corpus(sentences: int = 3000, seed: int = 1234) -> str:
    """A small, deterministic, learnable corpus: nothing needs downloading."""
    rng = random.Random(seed)  # noqa: S311 - reproducible text, not secrets
    lines = []
    for _ in range(sentences):
        lines.append(
            f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} "
            f"{rng.choice(_TAILS)}."
        )
    return "\n".join(lines) + "\n"


def load_text(dataset: str, split: str = "train", cache_dir: str | None = None) -> str:
    """The built-in corpus, a local text file, or a hub data set's `text` column."""
    if dataset == BUILTIN:
        return builtin_corpus()
    path = Path(dataset).expanduser()
    if path.exists() or "/" in dataset or dataset.endswith(".txt"):
        if not path.is_file():
            raise TrainingSetupError(f"--dataset {dataset}: no such file")
        text = path.read_text(encoding="utf-8", errors="replace")
    else:
        try:
            import datasets
        except ImportError:
            raise TrainingSetupError(
                f"--dataset {dataset}: hub data sets need the `datasets` package "
                "(or pass a local .txt file, or `builtin`)"
            ) from None
        try:
            loaded = datasets.load_dataset(
                dataset,
                HUB_CONFIGS.get(dataset),
                split=split,
                cache_dir=str(Path(cache_dir).expanduser()) if cache_dir else None,
            )
        except Exception as exc:  # the hub's errors are many; the message is what matters
            raise TrainingSetupError(f"--dataset {dataset}: cannot load it: {exc}") from None
        text = "\n".join(t for t in loaded["text"] if t.strip())
    if not text.strip():
        raise TrainingSetupError(f"--dataset {dataset}: the corpus is empty")
    return text


class BlockDataset(Dataset):
    """Consecutive blocks of `block` tokens; labels are the inputs (the model shifts them)."""

    def __init__(self, ids: torch.Tensor, block: int) -> None:
        count = ids.numel() // block
        self.blocks = ids[: count * block].view(count, block)

    def __len__(self) -> int:
        return self.blocks.size(0)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        block = self.blocks[index]
        return {"input_ids": block, "attention_mask": torch.ones_like(block), "labels": block}


def make_datasets(
    text: str, tokenizer, block: int, eval_fraction: float = 0.1, max_eval_blocks: int = 64
):
    """Train and eval block datasets; at least one training block or a clear error.

    Evaluation takes the corpus's tail: a tenth of it, at most `max_eval_blocks` blocks, so an
    evaluation costs seconds rather than a share of the run.
    """
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    total = ids.numel() // block
    if total < 2:
        raise TrainingSetupError(
            f"the corpus holds {ids.numel()} tokens: too few for two blocks of {block}"
        )
    eval_blocks = min(max(1, int(total * eval_fraction)), max_eval_blocks)
    split = (total - eval_blocks) * block
    return BlockDataset(ids[:split], block), BlockDataset(ids[split:], block)
