#!/usr/bin/env python3
"""LoRA fine-tuning of a causal language model, distributed with torchrun's environment.

Runs alone (one process) or under any torchrun launch: RANK, WORLD_SIZE, LOCAL_RANK and
MASTER_ADDR come from torchrun; NCCL is used on CUDA, gloo on the CPU. Defaults come from
config/training_defaults.yaml; options override them. Offline: `--model tiny-llama --dataset
builtin` trains a tiny Llama built from a config on a corpus generated here, `--dataset
builtin-chat` on generated conversations.

Data (trainlib.formats): plain text cut into blocks, or examples (`text`, `prompt`/`completion`,
chat `messages`, `instruction`/`input`/`output`) with the loss on completions only unless
`--train-on-prompts`, packed with `--packing`. Memory and speed settings left to `auto` are
decided by each rank's device (trainlib.speed).

Outputs under --output-dir (or $UGRO_OUTPUT_DIR): metrics.jsonl (every rank's figures on each
train line), tensorboard/ (the same scalars as event files), checkpoints/checkpoint-N/ (sealed
when complete), artifacts/adapter/ (load with PeftModel.from_pretrained), train_config.json.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import shutil
import sys
import warnings
from pathlib import Path

from trainlib.errors import TrainingSetupError
from trainlib.settings import Settings, build_parser, resolve

log = logging.getLogger("train_production")


def is_primary(rank: int, local_rank: int) -> bool:
    """The rank that writes metrics and artifacts: rank 0, or under UGRO the lead node's first.

    c10d hands out ranks in its own order, so rank 0 may sit on any node; UGRO marks the lead
    node's agent (UGRO_PRIMARY=1) so the job's results land with the lead, from where they come
    into the experiment directory. Every rank holds the same model and logs, so any one of them
    can write them.
    """
    flag = os.environ.get("UGRO_PRIMARY")
    return rank == 0 if flag is None else (flag == "1" and local_rank == 0)


def rank_info() -> tuple[int, int, int, int]:
    env = os.environ
    return (
        int(env.get("RANK", 0)),
        int(env.get("WORLD_SIZE", 1)),
        int(env.get("LOCAL_RANK", 0)),
        int(env.get("LOCAL_WORLD_SIZE", 1)),
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    rank, _, local_rank, _ = rank_info()
    quiet_logs(primary=is_primary(rank, local_rank))
    logging.basicConfig(
        level=logging.INFO if is_primary(rank, local_rank) else logging.WARNING,
        format=f"[rank {rank}] %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = resolve(args)
        return train(settings)
    except TrainingSetupError as exc:
        # Every rank checks the same inputs the same way, so every rank stops here, before any
        # collective that would leave the others waiting.
        print(f"train_production.py: error: {exc}", file=sys.stderr)
        return 2


def quiet_logs(*, primary: bool) -> None:
    """A rank's log keeps what a person reads: no progress bars (downloads, shard writes), each
    warning once, and warnings about the code itself (deprecations, the same on every rank)
    only in the primary's log.

    "Once" is done here rather than by warnings.simplefilter("once"): every catch_warnings()
    block that libraries open (the Trainer's checkpoint saves do) resets what Python remembers,
    so a warning raised at each checkpoint would be printed at each checkpoint."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    show, seen = warnings.showwarning, set()

    def show_once(message, category, filename, lineno, file=None, line=None):
        if (category, str(message)) not in seen:
            seen.add((category, str(message)))
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = show_once
    if not primary:
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)


def train(settings: Settings) -> int:
    import torch

    rank, world, local_rank, local_world = rank_info()
    primary = is_primary(rank, local_rank)
    if "OMP_NUM_THREADS" not in os.environ:
        # CPU ranks sharing a machine share its cores; oversubscription is several times slower.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    from trainlib import speed

    device = speed.this_device()
    cuda = device.cuda
    choose_for_device(settings, device)
    out = Path(settings.output_dir).expanduser()
    from trainlib import checkpoints
    from trainlib.rankclock import RankClock
    from trainlib.trainer import MeasuredTrainer, training_arguments

    # The Trainer's arguments first: options it refuses stop the run before anything is written.
    args = training_arguments(settings, out / "checkpoints", cuda=cuda, world=world)
    model, tokenizer, sets = prepare(settings, out / "artifacts", primary=primary)
    train_set, eval_set = sets.train, sets.eval
    _ = args.device  # sets up the process group (torchrun's environment) before we talk to peers
    resume_from = resume_point(settings, out / "checkpoints")
    if primary:
        record_settings(settings, out, model, sets, resume_from, device=device)
    clock = RankClock(pad_token_id=tokenizer.pad_token_id)
    plan = balanced_plan(settings, model, sets, args, out if primary else None)
    trainer = MeasuredTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set if settings.eval_strategy != "no" else None,
        data_collator=sets.collator,
        callbacks=_callbacks(out, clock, primary=primary, local_rank=local_rank),
        clock=clock,
        plan=plan,
        rank=rank,
        settings=settings,
    )
    if not primary:
        # The Trainer prints each log line on every node's first rank; the primary's is enough.
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    if resume_from is not None and checkpoints.holds_every_step(
        resume_from, settings.max_steps, settings.epochs
    ):
        # An earlier attempt trained every step and failed after its last checkpoint.
        restore_adapter(model, resume_from)
        log.info("%s holds every step: nothing left to train", resume_from)
        loss = None
    else:
        loss = trainer.train(resume_from_checkpoint=resume_from).training_loss
    if primary:
        save_artifacts(trainer.model, tokenizer, eval_set, out / "artifacts")
        trained = "" if loss is None else f": train loss {loss:.4f}"
        log.info("done%s; adapter in %s", trained, out / "artifacts" / "adapter")
    code = 1 if loss is not None and not math.isfinite(loss) else 0
    # The trainer holds the DDP-wrapped model, whose C++ reducer holds the process group. Freed
    # after destroy_process_group (when this function returned), the reducer would destroy the
    # group itself while holding the GIL, and the group's destructor joins gloo threads that may
    # still need the GIL to free a finished collective's tensors: a deadlock, seen here as a CPU
    # rank hung after its last step (pytorch/pytorch#56297). Freed now, while c10d still holds
    # the group, the reducer leaves it to destroy_process_group, which releases the GIL.
    del trainer, model
    gc.collect()
    _finish()
    return code


def choose_for_device(settings: Settings, device) -> None:
    """The settings left to `auto` decided for this rank's device (trainlib.speed), in place:
    train_config.json records what was used."""
    from trainlib import models, speed

    chosen = speed.choose(
        device,
        dtype=settings.dtype,
        gradient_checkpointing=settings.gradient_checkpointing,
        tf32=settings.tf32,
        attention=settings.attention,
        optim=settings.optim,
        dataloader_workers=settings.dataloader_workers,
        hub_model=settings.model not in models.OFFLINE,
        explicit=frozenset(settings.explicit),
    )
    settings.dtype = chosen.dtype
    settings.gradient_checkpointing = chosen.gradient_checkpointing
    settings.tf32 = chosen.tf32
    settings.attention = chosen.attention
    settings.optim = chosen.optim
    settings.dataloader_workers = chosen.dataloader_workers


def prepare(settings: Settings, artifacts: Path, *, primary: bool):
    """The model with its LoRA adapter, its tokenizer, and the data (trainlib.data.Sets); the
    output directories made once the data is known good. An offline base is kept in artifacts/
    (built from a seed, not downloaded: PeftModel.from_pretrained needs its base)."""
    from trainlib import data, models
    from transformers import set_seed

    set_seed(settings.seed)
    model, tokenizer = models.load_model(
        settings.model,
        seed=settings.seed,
        load_in_4bit=settings.load_in_4bit,
        dtype=settings.dtype,
        cache_dir=settings.cache_dir,
        attention=settings.attention,
    )
    offline = settings.model in models.OFFLINE
    limit = models.max_positions(model)
    if limit and settings.max_seq_length > limit:
        if "max_seq_length" in settings.explicit:
            raise TrainingSetupError(
                f"--max-seq-length {settings.max_seq_length} exceeds the {limit} positions "
                f"{settings.model} allows"
            )
        settings.max_seq_length = limit
    if offline and "target_modules" not in settings.explicit:
        # The offline model's output head is as random as the rest of it: adapt it too, or the
        # loss barely moves. (A pretrained model's head needs no such help.)
        settings.target_modules = [*settings.target_modules, "lm_head"]
    # Training keeps no key/value cache; and with one, transformers would not read packed
    # sequences' example boundaries from their position ids (masking_utils), so packed examples
    # would attend to each other.
    model.config.use_cache = False
    sets = data.make_sets(settings, tokenizer, offline_model=offline)
    for directory in (artifacts.parent / "checkpoints", artifacts):
        directory.mkdir(parents=True, exist_ok=True)
    if offline and primary:
        model.save_pretrained(str(artifacts / "base_model"))
        tokenizer.save_pretrained(str(artifacts / "base_model"))
    model = models.add_lora(
        model,
        rank=settings.lora_rank,
        alpha=settings.lora_alpha,
        dropout=settings.lora_dropout,
        targets=settings.target_modules,
        bias=settings.lora_bias,
    )
    return model, tokenizer, sets


def resume_point(settings: Settings, checkpoints_dir: Path) -> str | None:
    """The checkpoint to resume from: with `--resume auto` the newest one intact on every rank
    (every rank must resume from the same step)."""
    from trainlib import checkpoints
    from trainlib.callbacks import gather_object

    if settings.resume == "auto":
        mine = set(checkpoints.complete_steps(checkpoints_dir))
        common = set.intersection(*[set(s) for s in gather_object(sorted(mine))])
        return str(checkpoints.checkpoint_dir(checkpoints_dir, max(common))) if common else None
    return None if settings.resume == "no" else settings.resume


def restore_adapter(model, checkpoint: str) -> None:
    """The adapter's weights as the checkpoint holds them (what training would have resumed)."""
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    set_peft_model_state_dict(model, load_peft_weights(checkpoint, device="cpu"))


def record_settings(settings: Settings, out: Path, model, sets, resume_from, *, device) -> None:
    """train_config.json: the settings as resolved (for this device), and what the job trains
    (the primary's); a fresh start clears an earlier run's curves."""
    if resume_from is None:
        (out / "metrics.jsonl").unlink(missing_ok=True)
        shutil.rmtree(out / "tensorboard", ignore_errors=True)
    resolved = settings.to_json() | {
        "world_size": rank_info()[1],
        "resume_from": resume_from,
        "device": "cuda" if device.cuda else "cpu",
        "device_name": device.name,
        "dataset_format_used": sets.format,
        "train_blocks": len(sets.train),
        # What each step's all-reduce carries (as fp32 gradients): `ugro netcheck` prices it.
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "eval_blocks": len(sets.eval),
        "data": sets.stats,
    }
    (out / "train_config.json").write_text(json.dumps(resolved, indent=2) + "\n")
    log.info("settings: %s", json.dumps(resolved, sort_keys=True))


def _callbacks(out: Path, clock, *, primary: bool, local_rank: int) -> list:
    from trainlib.callbacks import (
        GradientDump,
        MetricsCallback,
        ProgressCallback,
        SealCheckpoints,
    )

    return [
        MetricsCallback(
            out / "metrics.jsonl", clock=clock, main=primary, tensorboard=out / "tensorboard"
        ),
        SealCheckpoints(out / "checkpoints", local_main=local_rank == 0),
        ProgressCallback(os.environ.get("UGRO_PROGRESS_FILE")),
        GradientDump(os.environ.get("UGRO_GRADIENT_DUMP"), main=primary),
    ]


def balanced_plan(settings: Settings, model, sets, args, out: Path | None):
    """This job's balanced split (trainlib.balance), or None for equal micro-batches.

    Every rank takes part: each probes (auto) or reads (manual) its own figures, all gather
    them, and each computes the same plan. The Trainer's arguments take this rank's micro-batch
    and the common accumulation; evaluation keeps one batch size on every rank (its gathers
    expect as much). The primary writes balance.json for the launch and `ugro results`.
    """
    from trainlib import balance
    from trainlib.callbacks import gather_object

    mode = balance.mode()
    if mode == "equal":
        return None
    rank, world, _, local_world = rank_info()
    node = os.environ.get("UGRO_NODE") or os.uname().nodename
    asked = settings.batch_size * settings.grad_accum * world
    if mode == "manual":
        value = os.environ.get(balance.MICRO_BATCH_ENV, "")
        mine = int(value) if value.isdigit() else 0
        records = gather_object(balance.probe_record(None, node, "cluster.yaml") | {"fit": mine})
        # Checked after the gather, on every rank alike: one rank stopping alone would leave
        # its peers waiting in the next collective.
        missing = sorted({r["node"] for r in records if r["fit"] < 1})
        if missing:
            raise TrainingSetupError(
                f"--balance manual: {', '.join(missing)} has no micro_batch_size in cluster.yaml"
            )
        plan = balance.Plan([int(r["fit"]) for r in records], settings.grad_accum)
    else:
        if args.device.type == "cuda" and not settings.load_in_4bit:
            model.to(args.device)
        sample = largest_item(sets.train)
        found = balance.probe(
            model,
            sample,
            cap=asked,
            cache_key={
                "sample_tokens": sample["input_ids"].numel(),
                "model": settings.model,
                "max_seq_length": settings.max_seq_length,
                "dtype": settings.dtype,
                "load_in_4bit": settings.load_in_4bit,
                "lora_rank": settings.lora_rank,
                "target_modules": sorted(settings.target_modules),
                "ranks_on_node": local_world,
            },
            together=_barrier,
        )
        records = gather_object(balance.probe_record(found, node, "probe"))
        plan = balance.split(
            asked, [r["fit"] for r in records], [r["samples_per_s"] for r in records]
        )
    args.per_device_train_batch_size = plan.micro_batches[rank]
    args.gradient_accumulation_steps = plan.accumulation
    args.per_device_eval_batch_size = min(plan.micro_batches)
    if out is not None:
        described = balance.describe(plan, records, mode) | {"asked_global_batch": asked}
        # Whole or not at all: the launch reads it as soon as it appears.
        partial = out / "balance.json.tmp"
        partial.write_text(json.dumps(described, indent=2) + "\n")
        os.replace(partial, out / "balance.json")
        log.info("balance: %s", json.dumps(described, sort_keys=True))
    return plan


def largest_item(dataset) -> dict:
    """The training item with the most tokens: what a micro-batch must fit is its worst case."""
    lengths = dataset.lengths() if hasattr(dataset, "lengths") else [0]
    return dataset[max(range(len(lengths)), key=lengths.__getitem__)]


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def save_artifacts(model, tokenizer, eval_set, artifacts: Path) -> None:
    """The adapter, and a reference forward pass to check a reloaded adapter against."""
    import torch

    model.save_pretrained(str(artifacts / "adapter"))
    tokenizer.save_pretrained(str(artifacts / "adapter"))
    model.eval()
    sample = eval_set[0]["input_ids"][None, :].to(model.device)
    with torch.no_grad():
        logits = model(input_ids=sample).logits.float().cpu()
    torch.save({"input_ids": sample.cpu(), "logits": logits}, artifacts / "probe.pt")


def _finish() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
