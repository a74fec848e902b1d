#!/usr/bin/env python3
"""The floor of bench/throughput.py: LoRA fine-tuning on prompt/completion data with the plain
HF Trainer under plain torchrun, written for the bench with nothing of UGRO's. The loss is on
completions only and batches are padded to their longest example, as UGRO's are."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
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
    p = argparse.ArgumentParser()
    for name in ("--model", "--data", "--out", "--optim"):
        p.add_argument(name, required=True)
    for name in (
        "--max-seq-length",
        "--batch-size",
        "--max-steps",
        "--logging-steps",
        "--lora-rank",
        "--workers",
    ):
        p.add_argument(name, type=int, required=True)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--gradient-checkpointing", action="store_true")
    args = p.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, attn_implementation="sdpa")
    model.config.use_cache = False
    model = get_peft_model(
        model,
        LoraConfig(
            r=args.lora_rank,
            lora_alpha=2 * args.lora_rank,
            lora_dropout=0.05,
            target_modules=["q_proj", "v_proj"],
            task_type="CAUSAL_LM",
        ),
    )
    cuda = torch.cuda.is_available()
    training = TrainingArguments(
        output_dir=args.out + ".d",
        max_steps=args.max_steps,
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        logging_steps=args.logging_steps,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=42,
        warmup_steps=0,
        bf16=args.dtype == "bfloat16",
        fp16=args.dtype == "float16",
        optim=args.optim,
        gradient_checkpointing=args.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        dataloader_num_workers=args.workers,
        dataloader_pin_memory=cuda,
        ddp_find_unused_parameters=False,
        use_cpu=not cuda,
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        average_tokens_across_devices=True,
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
