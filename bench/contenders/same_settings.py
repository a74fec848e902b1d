"""What every throughput contender takes alike (bench/throughput.py): its command line, and the
Trainer's arguments built from it, so that the plain Trainer and TRL's SFTTrainer train with
the very same settings. Nothing of UGRO's."""

from __future__ import annotations

import argparse
from typing import Any

import torch


def parse(*, packing: bool = False) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    for name in ("--model", "--data", "--out", "--optim"):
        p.add_argument(name, required=True)
    for name in ("--max-seq-length", "--batch-size", "--max-steps", "--logging-steps",
                 "--lora-rank", "--workers"):  # fmt: skip
        p.add_argument(name, type=int, required=True)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--gradient-checkpointing", action="store_true")
    if packing:
        p.add_argument("--packing", action="store_true")
    return p.parse_args()


def trainer_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """TrainingArguments' (and SFTConfig's) keywords for these settings."""
    cuda = torch.cuda.is_available()
    return {
        "output_dir": args.out + ".d",
        "max_steps": args.max_steps,
        "learning_rate": args.lr,
        "per_device_train_batch_size": args.batch_size,
        "logging_steps": args.logging_steps,
        "save_strategy": "no",
        "report_to": [],
        "disable_tqdm": True,
        "seed": 42,
        "warmup_steps": 0,
        "bf16": args.dtype == "bfloat16",
        "fp16": args.dtype == "float16",
        "optim": args.optim,
        "gradient_checkpointing": args.gradient_checkpointing,
        "gradient_checkpointing_kwargs": {"use_reentrant": False},
        "dataloader_num_workers": args.workers,
        "dataloader_pin_memory": cuda,
        "ddp_find_unused_parameters": False,
        "use_cpu": not cuda,
        "include_num_input_tokens_seen": "non_padding",
        "average_tokens_across_devices": True,
    }


def lora(args: argparse.Namespace):
    from peft import LoraConfig

    return LoraConfig(
        r=args.lora_rank,
        lora_alpha=2 * args.lora_rank,
        lora_dropout=0.05,
        target_modules=["q_proj", "v_proj"],
        task_type="CAUSAL_LM",
    )
