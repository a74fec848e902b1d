"""Training settings: config/training_defaults.yaml (the seed's file), overridden by options."""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainlib.errors import TrainingSetupError

DEFAULTS_ENV = "UGRO_TRAINING_DEFAULTS"
OUTPUT_ENV = "UGRO_OUTPUT_DIR"
SCRIPTS_DIR = Path(__file__).resolve().parent.parent
FORMATS = ("auto", "plain", "text", "prompt-completion", "chat", "instruction")


@dataclass
class Settings:
    model: str
    dataset: str
    dataset_split: str
    dataset_format: str
    chat_template: str | None
    train_on_prompts: bool
    packing: bool
    cache_dir: str | None
    max_seq_length: int
    dtype: str
    load_in_4bit: bool
    gradient_checkpointing: bool | None  # None: auto (trainlib.speed)
    tf32: bool | None
    attention: str
    optim: str
    dataloader_workers: int | None
    epochs: float
    max_steps: int
    learning_rate: float
    warmup_steps: int
    weight_decay: float
    batch_size: int
    grad_accum: int
    max_grad_norm: float
    adam_beta1: float
    adam_beta2: float
    adam_eps: float
    save_strategy: str
    save_steps: int
    save_total_limit: int | None
    eval_strategy: str
    eval_steps: int
    logging_steps: int
    lora_rank: int
    lora_alpha: float
    lora_dropout: float
    target_modules: list[str]
    lora_bias: str
    seed: int
    shuffle: bool
    ddp_timeout: int
    output_dir: str
    resume: str
    defaults_file: str
    explicit: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def find_defaults(named: str | None) -> Path:
    candidates = [
        named,
        os.environ.get(DEFAULTS_ENV),
        SCRIPTS_DIR.parent / "config" / "training_defaults.yaml",
        SCRIPTS_DIR / "training_defaults.yaml",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).expanduser().is_file():
            return Path(candidate).expanduser()
    if named:
        raise TrainingSetupError(f"--defaults {named}: no such file")
    raise TrainingSetupError(
        "no training_defaults.yaml found (looked in --defaults, $UGRO_TRAINING_DEFAULTS, "
        f"{SCRIPTS_DIR.parent / 'config'}, {SCRIPTS_DIR})"
    )


def read_defaults(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise TrainingSetupError(f"{path}: unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise TrainingSetupError(f"{path}: expected a mapping of sections")

    def section(name: str) -> dict[str, Any]:
        value = data.get(name) or {}
        if not isinstance(value, dict):
            raise TrainingSetupError(f"{path}: {name}: expected a mapping")
        return value

    model, dataset, training = section("model"), section("dataset"), section("training")
    optimizer, lora, quant, logging_ = (
        section("optimizer"),
        section("lora"),
        section("quantization"),
        section("logging"),
    )
    betas = optimizer.get("betas") or [0.9, 0.999]
    return {
        "model": model.get("name", "unsloth/tinyllama-bnb-4bit"),
        "max_seq_length": model.get("max_seq_length", 2048),
        "dtype": model.get("dtype", "auto"),
        "attention": model.get("attention", "auto"),
        "gradient_checkpointing": training.get("gradient_checkpointing"),
        "load_in_4bit": bool(model.get("load_in_4bit", False) or quant.get("enabled", False)),
        "dataset": dataset.get("name", "wikitext"),
        "dataset_split": dataset.get("split", "train"),
        "dataset_format": dataset.get("format", "auto"),
        "train_on_prompts": bool(dataset.get("train_on_prompts", False)),
        "packing": bool(dataset.get("packing", False)),
        "cache_dir": dataset.get("cache_dir"),
        "epochs": training.get("num_epochs", 1),
        "learning_rate": training.get("learning_rate", 2e-4),
        "warmup_steps": training.get("warmup_steps", 0),
        "weight_decay": training.get("weight_decay", 0.0),
        "batch_size": training.get("batch_size_per_gpu", 1),
        "grad_accum": training.get("gradient_accumulation_steps", 1),
        "max_grad_norm": training.get("max_grad_norm", 1.0),
        "save_strategy": training.get("save_strategy", "epoch"),
        "eval_strategy": training.get("evaluation_strategy", training.get("eval_strategy", "no")),
        "eval_steps": training.get("eval_steps", 100),
        "adam_beta1": float(betas[0]),
        "adam_beta2": float(betas[1]),
        "adam_eps": float(optimizer.get("eps", 1e-8)),
        "lora_rank": lora.get("rank", 16),
        "lora_alpha": lora.get("alpha", 32),
        "lora_dropout": lora.get("dropout", 0.05),
        "target_modules": list(lora.get("target_modules") or ["q_proj", "v_proj"]),
        "lora_bias": lora.get("bias", "none"),
        "logging_steps": logging_.get("steps", 10),
    }


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
        return value

    return parse


def _non_negative(kind):
    def parse(text: str):
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
        return value

    return parse


def build_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, argument_default=argparse.SUPPRESS)
    p.add_argument("--defaults", help="training_defaults.yaml (default: config/ beside scripts/)")
    p.add_argument(
        "--model", help="hub name, local model directory, or tiny-llama, llama-20m, llama-100m"
    )
    p.add_argument(
        "--dataset",
        help="hub data set, local .txt/.jsonl/.json file, builtin or builtin-chat (offline)",
    )
    p.add_argument("--dataset-split")
    p.add_argument(
        "--dataset-format",
        choices=FORMATS,
        help="default: detected from the file's suffix and the first example's fields",
    )
    p.add_argument("--chat-template", help="a Jinja chat template file (default: the tokenizer's)")
    p.add_argument(
        "--train-on-prompts",
        action=argparse.BooleanOptionalAction,
        help="compute the loss on prompt tokens too (default: on completions only)",
    )
    p.add_argument(
        "--packing",
        action=argparse.BooleanOptionalAction,
        help="pack short examples into sequences of --max-seq-length (attention stays within each)",
    )
    p.add_argument("--cache-dir")
    p.add_argument("--max-seq-length", type=_positive(int))
    p.add_argument(
        "--dtype",
        choices=["auto", "float16", "bfloat16", "float32"],
        help="auto: bf16 where the GPU has it, fp16 on older GPUs, fp32 on the CPU",
    )
    p.add_argument("--load-in-4bit", action=argparse.BooleanOptionalAction)
    p.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        help="default: on for hub models on CUDA",
    )
    p.add_argument(
        "--tf32", action=argparse.BooleanOptionalAction, help="default: on Ampere and newer GPUs"
    )
    p.add_argument(
        "--attention",
        choices=["auto", "sdpa", "eager", "flash_attention_2"],
        help="auto: flash attention 2 where installed on a GPU, else PyTorch's SDPA",
    )
    p.add_argument(
        "--optim",
        help="a Trainer optimizer name (auto: adamw_torch_fused on CUDA, adamw_torch on the CPU; "
        "adamw_8bit and paged_adamw_8bit need bitsandbytes)",
    )
    p.add_argument(
        "--dataloader-workers",
        type=_non_negative(int),
        help="data loader processes per rank (default: 2 on CUDA, 0 on the CPU)",
    )
    p.add_argument("--epochs", type=_positive(float))
    p.add_argument("--max-steps", type=_positive(int), help="stop after this many optimizer steps")
    p.add_argument("--lr", "--learning-rate", dest="learning_rate", type=_positive(float))
    p.add_argument("--warmup-steps", type=_non_negative(int))
    p.add_argument("--weight-decay", type=_non_negative(float))
    p.add_argument("--batch-size", type=_positive(int), help="per device")
    p.add_argument("--grad-accum", type=_positive(int))
    p.add_argument("--max-grad-norm", type=_positive(float))
    p.add_argument("--save-strategy", choices=["no", "steps", "epoch"])
    p.add_argument("--save-steps", type=_positive(int))
    p.add_argument("--save-total-limit", type=_positive(int))
    p.add_argument("--eval-strategy", choices=["no", "steps", "epoch"])
    p.add_argument("--eval-steps", type=_positive(int))
    p.add_argument("--logging-steps", type=_positive(int))
    p.add_argument("--lora-rank", type=_positive(int))
    p.add_argument("--lora-alpha", type=_positive(float))
    p.add_argument("--lora-dropout", type=_non_negative(float))
    p.add_argument("--target-modules", type=lambda s: [m for m in s.split(",") if m])
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--no-shuffle",
        dest="shuffle",
        action="store_false",
        help="train on the blocks in order (the same batches at any world size)",
    )
    p.add_argument(
        "--ddp-timeout",
        type=_positive(int),
        help="seconds a rank waits for its peers before failing (default 300)",
    )
    p.add_argument("--output-dir", help=f"default: ${OUTPUT_ENV}, else ./outputs")
    p.add_argument("--resume", help="auto (newest complete checkpoint), no, or a checkpoint path")
    return p


def resolve(args: argparse.Namespace) -> Settings:
    given = vars(args)
    defaults_file = find_defaults(given.pop("defaults", None))
    values = read_defaults(defaults_file)
    values.update(
        max_steps=-1,
        save_steps=500,
        save_total_limit=None,
        seed=42,
        shuffle=True,
        ddp_timeout=300,
        output_dir=os.environ.get(OUTPUT_ENV) or "outputs",
        resume="no",
        chat_template=None,
        tf32=None,
        optim="auto",
        dataloader_workers=None,
    )
    values.update(given)
    settings = Settings(**values, defaults_file=str(defaults_file), explicit=sorted(given))
    if settings.dataset_format not in FORMATS:
        raise TrainingSetupError(
            f"{defaults_file}: dataset.format: {settings.dataset_format!r} is not one of "
            f"{', '.join(FORMATS)}"
        )
    if settings.lora_dropout >= 1:
        raise TrainingSetupError(f"--lora-dropout {settings.lora_dropout}: must be below 1")
    if settings.resume not in ("auto", "no") and not Path(settings.resume).is_dir():
        raise TrainingSetupError(f"--resume {settings.resume}: expected auto, no or a checkpoint")
    return settings
