#!/usr/bin/env python3
"""The anchor of bench/throughput.py: the same LoRA fine-tuning with TRL's SFTTrainer under plain
torchrun (prompt/completion data: TRL trains on completions only and pads each batch to its
longest by default)."""

from __future__ import annotations

import argparse

import torch
from datasets import load_dataset
from peft import LoraConfig
from token_clock import TokenClock
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer


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
    p.add_argument("--packing", action="store_true")
    args = p.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, attn_implementation="sdpa")
    cuda = torch.cuda.is_available()
    config = SFTConfig(
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
        include_num_input_tokens_seen="non_padding",
        average_tokens_across_devices=True,
        max_length=args.max_seq_length,
        packing=args.packing,
        completion_only_loss=True,
        dataset_num_proc=1,
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        processing_class=tokenizer,
        train_dataset=load_dataset("json", data_files=args.data, split="train"),
        peft_config=LoraConfig(
            r=args.lora_rank,
            lora_alpha=2 * args.lora_rank,
            lora_dropout=0.05,
            target_modules=["q_proj", "v_proj"],
            task_type="CAUSAL_LM",
        ),
        callbacks=[TokenClock(args.out)],
    )
    trainer.train()


if __name__ == "__main__":
    main()
