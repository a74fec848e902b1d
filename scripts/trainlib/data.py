"""The training and evaluation sets: plain text cut into fixed blocks (the built-in corpus, a
.txt file, a hub data set's text), or examples in one of trainlib.formats' layouts, tokenized with
their completions marked (trainlib.examples) and packed when asked (trainlib.packing)."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from trainlib import conversations, examples, formats, packing
from trainlib.errors import TrainingSetupError

log = logging.getLogger(__name__)

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
    if not _is_hub_name(dataset):
        if not path.is_file():
            raise TrainingSetupError(f"--dataset {dataset}: no such file")
        text = path.read_text(encoding="utf-8", errors="replace")
    else:
        loaded = _hub_rows(dataset, split, cache_dir)
        if "text" not in loaded.column_names:
            raise TrainingSetupError(
                f"--dataset {dataset}: no text column (it has {', '.join(loaded.column_names)}); "
                "pass --dataset-format for its examples"
            )
        text = "\n".join(t for t in loaded["text"] if t.strip())
    if not text.strip():
        raise TrainingSetupError(f"--dataset {dataset}: the corpus is empty")
    return text


def _hub_rows(dataset: str, split: str, cache_dir: str | None):
    try:
        import datasets
    except ImportError:
        raise TrainingSetupError(
            f"--dataset {dataset}: hub data sets need the `datasets` package "
            "(or pass a local .txt or .jsonl file, `builtin` or `builtin-chat`)"
        ) from None
    try:
        return datasets.load_dataset(
            dataset,
            HUB_CONFIGS.get(dataset),
            split=split,
            cache_dir=str(Path(cache_dir).expanduser()) if cache_dir else None,
        )
    except Exception as exc:  # the hub's errors are many; the message is what matters
        raise TrainingSetupError(f"--dataset {dataset}: cannot load it: {exc}") from None


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


# --- Examples: prompt/completion, chat, instruction and text records ---------------------------

EVAL_FRACTION, MAX_EVAL_EXAMPLES = 0.1, 64


@dataclass
class Sets:
    """What training reads: the two sets, how to batch them, and what was made of the data."""

    train: Any
    eval: Any
    collator: Any
    format: str
    stats: dict[str, Any] = field(default_factory=dict)


def make_sets(settings, tokenizer, *, offline_model: bool) -> Sets:
    """The data set named by the settings, in its format, ready for the Trainer."""
    kind = settings.dataset_format
    source = settings.dataset
    if kind == "auto" and not formats.is_record_source(source):
        kind = _hub_format(settings) if _is_hub_name(source) else formats.PLAIN
    if kind == formats.PLAIN:
        return _plain_sets(settings, tokenizer)
    records = list(_records(settings))
    if not records:
        raise TrainingSetupError(f"--dataset {source}: empty: it holds no examples")
    if kind == "auto":
        kind = formats.detect(records[0])
    render = None
    if kind == formats.CHAT:
        render = chat_renderer(tokenizer, settings, offline_model=offline_model)
    eos = kind != formats.CHAT  # a chat template closes each turn itself
    tokenized = [
        examples.tokenize(
            formats.segments(record, kind, render),
            tokenizer,
            eos=eos,
            train_on_prompts=settings.train_on_prompts,
            # A chat template writes the beginning-of-sequence token itself where it wants one.
            first=kind != formats.CHAT,
        )
        for record in records
    ]
    kept, truncation = examples.fit(tokenized, settings.max_seq_length)
    truncation.log(len(tokenized), settings.max_seq_length)
    if len(kept) < 2:
        raise TrainingSetupError(
            f"--dataset {source}: {len(kept)} usable examples; at least two are needed "
            "(one to train on, one to evaluate)"
        )
    eval_count = min(max(1, int(len(kept) * EVAL_FRACTION)), MAX_EVAL_EXAMPLES)
    train_part, eval_part = kept[:-eval_count], kept[-eval_count:]
    lengths = [len(e.input_ids) for e in train_part]
    stats: dict[str, Any] = {
        "train_examples": len(train_part),
        "eval_examples": len(eval_part),
        "truncated_examples": truncation.cut,
        "dropped_examples": truncation.dropped,
        "target_tokens": sum(sum(1 for t in e.labels if t != examples.IGNORE) for e in train_part),
        "padding_unpacked": round(packing.padding_fraction(lengths, settings.batch_size), 4),
    }
    if settings.packing:
        packing.check_support()
        train_set = packing.PackedDataset(train_part, settings.max_seq_length)
        eval_set = packing.PackedDataset(eval_part, settings.max_seq_length)
        stats["padding_packed"] = round(
            packing.padding_fraction(train_set.lengths(), settings.batch_size), 4
        )
        collator = packing.PackedCollator(tokenizer.pad_token_id)
    else:
        train_set, eval_set = (
            examples.ExampleDataset(train_part),
            examples.ExampleDataset(eval_part),
        )
        collator = examples.PaddedCollator(tokenizer.pad_token_id)
    return Sets(train_set, eval_set, collator, kind, stats)


def chat_renderer(tokenizer, settings, *, offline_model: bool):
    """The tokenizer's chat template as render(messages, add_generation_prompt): from
    --chat-template when given, else the tokenizer's own, else (offline models only) UGRO's."""
    if settings.chat_template:
        path = Path(settings.chat_template).expanduser()
        if not path.is_file():
            raise TrainingSetupError(f"--chat-template {settings.chat_template}: no such file")
        tokenizer.chat_template = path.read_text(encoding="utf-8")
    elif not getattr(tokenizer, "chat_template", None):
        if not offline_model:
            raise TrainingSetupError(
                f"--dataset {settings.dataset} holds conversations and {settings.model}'s "
                "tokenizer has no chat template: pass --chat-template FILE (a Jinja template), "
                "or train the model's chat or instruct variant"
            )
        tokenizer.chat_template = conversations.DEFAULT_CHAT_TEMPLATE

    def render(messages, add_generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )

    return render


def _is_hub_name(source: str) -> bool:
    """Not the built-in corpus nor a local file: `wikitext`, `HuggingFaceH4/no_robots`."""
    path = Path(source).expanduser()
    local = path.exists() or source.startswith((".", "/", "~"))
    return not (
        source == BUILTIN or local or path.suffix.lower() in (".txt", *formats.RECORD_SUFFIXES)
    )


def _hub_format(settings) -> str:
    """A hub data set's format, from its columns: one whose only text is `text` is a corpus,
    cut into blocks as before (wikitext)."""
    columns = _hub_rows(settings.dataset, settings.dataset_split, settings.cache_dir).column_names
    kind = formats.detect(formats.Record(settings.dataset, dict.fromkeys(columns)))
    return formats.PLAIN if kind == formats.TEXT else kind


def _records(settings):
    source = settings.dataset
    if source == formats.BUILTIN_CHAT:
        for index, turns in enumerate(conversations.builtin_conversations(seed=settings.seed)):
            yield formats.Record(f"builtin-chat[{index}]", {"messages": turns})
        return
    path = Path(source).expanduser()
    if path.suffix.lower() in formats.RECORD_SUFFIXES:
        if not path.is_file():
            raise TrainingSetupError(f"--dataset {source}: no such file")
        yield from formats.read_file_records(path)
        return
    if not _is_hub_name(source):
        raise TrainingSetupError(
            f"--dataset {source}: examples come from a .jsonl or .json file, a hub data set or "
            f"builtin-chat (--dataset-format {settings.dataset_format} was asked for)"
        )
    for index, row in enumerate(_hub_rows(source, settings.dataset_split, settings.cache_dir)):
        yield formats.Record(f"{source}[{index}]", dict(row))


def _plain_sets(settings, tokenizer) -> Sets:
    text = load_text(settings.dataset, settings.dataset_split, settings.cache_dir)
    train_set, eval_set = make_datasets(text, tokenizer, settings.max_seq_length)
    return Sets(train_set, eval_set, examples.PaddedCollator(tokenizer.pad_token_id), formats.PLAIN)
