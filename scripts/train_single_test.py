#!/usr/bin/env python3
"""Single-node sanity run: a few LoRA steps on one GPU (or the CPU).

Prints throughput and peak memory, and exits 0 only if the loss is finite and falls; 1 if it is
not; 2 if the setup is broken (no CUDA where asked for, a model or data set that cannot load).
UGRO's launch runs it as a preflight on each node.

A plain loop rather than the Trainer on purpose: this measures the device and the stack, with no
process group or Trainer machinery between them and the numbers.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

from trainlib.errors import TrainingSetupError


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-llama")
    p.add_argument("--dataset", default="builtin")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-seq-length", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    for name in ("steps", "batch_size", "max_seq_length"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.steps < 6:
        p.error("--steps must be at least 6 (the loss is compared over the first and last three)")
    if not args.lr > 0:
        p.error("--lr must be greater than 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        return run(args)
    except TrainingSetupError as exc:
        print(f"train_single_test.py: error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    import torch
    from trainlib import callbacks, data, models

    cuda = torch.cuda.is_available()
    if args.device == "cuda" and not cuda:
        raise TrainingSetupError(
            f"--device cuda, but torch {torch.__version__} sees no GPU "
            f"(CUDA build: {torch.version.cuda or 'none'})"
        )
    device = torch.device("cuda" if (args.device != "cpu" and cuda) else "cpu")
    torch.manual_seed(args.seed)
    model, tokenizer = models.load_model(
        args.model, seed=args.seed, load_in_4bit=cuda, dtype="float16", cache_dir=None
    )
    limit = models.max_positions(model)
    if limit and args.max_seq_length > limit:
        raise TrainingSetupError(
            f"--max-seq-length {args.max_seq_length} exceeds the model's {limit}"
        )
    targets = ["q_proj", "v_proj"] + (["lm_head"] if args.model == models.TINY else [])
    model = models.add_lora(model, rank=8, alpha=16, dropout=0.0, targets=targets, bias="none")
    model.to(device)
    train_set, _ = data.make_datasets(data.load_text(args.dataset), tokenizer, args.max_seq_length)
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=args.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    losses: list[float] = []
    model.train()
    batches = iter(loader)
    started = time.perf_counter()
    for _ in range(args.steps):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        batch = {k: v.to(device) for k, v in batch.items()}
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    tokens = args.steps * args.batch_size * args.max_seq_length
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    print(
        f"device: {device} ({torch.cuda.get_device_name(0) if device.type == 'cuda' else 'cpu'}), "
        f"torch {torch.__version__}"
    )
    print(f"throughput: {tokens / seconds:,.0f} tokens/s, {args.steps / seconds:.1f} steps/s")
    print(f"peak memory: {callbacks.peak_memory_mb():,.0f} MiB")
    print(f"loss: {first:.4f} -> {last:.4f} over {args.steps} steps")
    if not all(math.isfinite(x) for x in losses):
        print("FAIL: the loss is not finite", file=sys.stderr)
        return 1
    if not last < first:
        print("FAIL: the loss did not fall", file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
