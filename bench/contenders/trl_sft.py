#!/usr/bin/env python3
"""The anchor of bench/throughput.py: the same LoRA fine-tuning with TRL's SFTTrainer under plain
torchrun (prompt/completion data: TRL trains on completions only and pads each batch to its
longest by default)."""

from __future__ import annotations

import same_settings
from datasets import load_dataset
from token_clock import TokenClock
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer


def main() -> None:
    args = same_settings.parse(packing=True)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, attn_implementation="sdpa")
    config = SFTConfig(
        **same_settings.trainer_arguments(args),
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
        peft_config=same_settings.lora(args),
        callbacks=[TokenClock(args.out)],
    )
    trainer.train()


if __name__ == "__main__":
    main()
