"""The HF Trainer as UGRO's ranks run it: its arguments from the settings, and a Trainer that
times each rank's data and gradient sync and, when the batches are balanced, gives each rank
its own slice of every micro-step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import Trainer, TrainingArguments

from trainlib.balance import UnevenBatchSampler, epoch_loader
from trainlib.errors import TrainingSetupError
from trainlib.rankclock import RankClock, TimedBatches, time_gradient_sync
from trainlib.settings import Settings


def training_arguments(
    settings: Settings, checkpoints: Path, *, cuda: bool, world: int
) -> TrainingArguments:
    try:
        return _arguments(settings, checkpoints, cuda=cuda, world=world)
    except ValueError as exc:
        # Options that reach the Trainer unchecked (an --optim name it does not know, say).
        raise TrainingSetupError(str(exc).strip().splitlines()[0]) from None


def _arguments(settings: Settings, checkpoints: Path, *, cuda: bool, world: int):
    return TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        learning_rate=settings.learning_rate,
        warmup_steps=settings.warmup_steps,
        weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm,
        adam_beta1=settings.adam_beta1,
        adam_beta2=settings.adam_beta2,
        adam_epsilon=settings.adam_eps,
        logging_steps=settings.logging_steps,
        save_strategy=settings.save_strategy,
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        eval_strategy=settings.eval_strategy,
        eval_steps=settings.eval_steps,
        seed=settings.seed,
        data_seed=settings.seed,
        train_sampling_strategy="random" if settings.shuffle else "sequential",
        # LoRA leaves the frozen base's parameters without gradients: searching for unused
        # parameters every step would only cost time.
        ddp_find_unused_parameters=False,
        ddp_backend=("nccl" if cuda else "gloo") if world > 1 else None,
        ddp_timeout=settings.ddp_timeout,
        use_cpu=not cuda,
        # The weights stay fp32 (LoRA's in half precision could not be unscaled by AMP): the
        # dtype is the autocast precision (trainlib.speed decided it for this device).
        fp16=settings.dtype == "float16",
        bf16=settings.dtype == "bfloat16",
        tf32=settings.tf32 if cuda else None,
        optim=settings.optim,
        # Items hold only what the model takes (position ids too, when packed).
        remove_unused_columns=False,
        dataloader_pin_memory=cuda,
        # Nodes of a home cluster share no file system: each keeps a full copy to resume from.
        save_on_each_node=True,
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=settings.dataloader_workers or 0,
        # Each rank's summed loss over the whole global batch's tokens (gathered): the exact
        # gradient whatever the ranks' shares (trainlib.balance), and a loss weighted by tokens.
        average_tokens_across_devices=True,
        **_checkpointing(bool(settings.gradient_checkpointing)),
    )


def _checkpointing(enabled: bool) -> dict[str, Any]:
    """Gradient checkpointing by the argument names this transformers knows (5.x renamed them
    activation_checkpointing and warns about the old ones). Non-reentrant: it needs no input
    gradients, which LoRA's frozen embeddings would not give."""
    fields = TrainingArguments.__dataclass_fields__
    name = (
        "activation_checkpointing"
        if "activation_checkpointing" in fields
        else "gradient_checkpointing"
    )
    return {name: enabled, f"{name}_kwargs": {"use_reentrant": False}}


class MeasuredTrainer(Trainer):  # type: ignore[misc]
    """The Trainer, with this rank's data and gradient-sync time on its clock, and this rank's
    slice of each micro-step when the batches are balanced (`plan`, else None)."""

    def __init__(
        self, *args: Any, clock: RankClock, plan: Any, rank: int, settings: Settings, **kwargs: Any
    ) -> None:
        # Named apart from the Trainer's own attributes, and set before its __init__ runs.
        self.ugro_clock = clock
        self.ugro_plan = plan
        self.ugro_rank = rank
        self.ugro_settings = settings
        self.sync_timed = False
        super().__init__(*args, **kwargs)

    def get_batch_samples(self, epoch_iterator, num_batches, device):  # type: ignore[no-untyped-def]
        if not self.sync_timed:  # the first fetch comes before the first backward
            self.sync_timed = time_gradient_sync(self.model_wrapped, self.ugro_clock) or True
        timed = TimedBatches(epoch_iterator, self.ugro_clock)
        return super().get_batch_samples(timed, num_batches, device)

    def get_train_dataloader(self):  # type: ignore[no-untyped-def]
        if self.ugro_plan is None:
            return super().get_train_dataloader()
        sampler = UnevenBatchSampler(
            len(self.train_dataset),
            self.ugro_plan.micro_batches,
            self.ugro_rank,
            shuffle=self.ugro_settings.shuffle,
            seed=self.ugro_settings.seed,
        )
        return epoch_loader(
            self.train_dataset,
            sampler,
            self.data_collator,
            workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
