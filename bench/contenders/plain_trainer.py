#!/usr/bin/env python3
"""The floor of bench/throughput.py: LoRA fine-tuning on prompt/completion data with the plain
HF Trainer under plain torchrun, written for the bench with nothing of UGRO's. The loss is on
completions only and batches are padded to their longest example, as UGRO's are."""

from __future__ import annotations

import json
from pathlib import Path

import same_settings
import torch
from peft import get_peft_model
from token_clock import TokenClock
from torch.utils.data import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments


class PromptCompletion(Dataset):
    def __init__(self, path: str, tokenizer, max_length: int) -> None:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
        self.items = []
        for row in rows:
            prompt = tokenizer(row["prompt"])["input_ids"]
            completion = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
            ids = (prompt + completion + [tokenizer.eos_token_id])[:max_length]
            labels = ([-100] * len(prompt) + completion + [tokenizer.eos_token_id])[:max_length]
            self.items.append((ids, labels))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


def pad(pad_id: int):
    def collate(items):
        longest = max(len(ids) for ids, _ in items)
        ids = torch.full((len(items), longest), pad_id)
        labels = torch.full((len(items), longest), -100)
        mask = torch.zeros((len(items), longest), dtype=torch.long)
        for row, (i, lab) in enumerate(items):
            ids[row, : len(i)], labels[row, : len(i)], mask[row, : len(i)] = (
                torch.tensor(i),
                torch.tensor(lab),
                1,
            )
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    return collate


def main() -> None:
    args = same_settings.parse()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, attn_implementation="sdpa")
    model.config.use_cache = False
    model = get_peft_model(model, same_settings.lora(args))
    training = TrainingArguments(
        **same_settings.trainer_arguments(args), remove_unused_columns=False
    )
    trainer = Trainer(
        model=model,
        args=training,
        processing_class=tokenizer,
        train_dataset=PromptCompletion(args.data, tokenizer, args.max_seq_length),
        data_collator=pad(tokenizer.pad_token_id),
        callbacks=[TokenClock(args.out)],
    )
    trainer.train()


if __name__ == "__main__":
    main()
