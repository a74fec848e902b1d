"""The memory and speed settings a node's device calls for, where the user left them to `auto`.

Decided per rank from its own device (a cluster may mix cards), and recorded as decided in
train_config.json:
- dtype: bf16 on cards that support it, fp16 on older CUDA cards, fp32 on the CPU;
- gradient checkpointing: on for hub models on CUDA (what lets a 7B QLoRA fit in 8-12 GB), off
  for the offline models and on the CPU (it trades compute for memory nobody is short of there);
- TF32 matmuls on Ampere (compute capability 8.0) and newer;
- attention: flash attention 2 where it is installed and the dtype is half, else PyTorch's SDPA;
- the optimizer: fused AdamW on CUDA, AdamW on the CPU;
- data loader workers (2) and pinned memory on CUDA; none on the CPU, where the ranks already
  share the cores.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from trainlib.errors import TrainingSetupError

AUTO = "auto"
HALF = ("bfloat16", "float16")
CUDA_WORKERS = 2


@dataclass(frozen=True)
class Device:
    cuda: bool
    name: str = "cpu"
    capability: tuple[int, int] | None = None
    bf16: bool = False
    flash_attention: bool = False


def this_device() -> Device:
    import torch

    if not torch.cuda.is_available():
        return Device(cuda=False)
    return Device(
        cuda=True,
        name=torch.cuda.get_device_name(),
        capability=torch.cuda.get_device_capability(),
        bf16=torch.cuda.is_bf16_supported(),
        flash_attention=importlib.util.find_spec("flash_attn") is not None,
    )


@dataclass(frozen=True)
class Choices:
    dtype: str
    gradient_checkpointing: bool
    tf32: bool
    attention: str
    optim: str
    dataloader_workers: int
    pin_memory: bool


def choose(
    device: Device,
    *,
    dtype: str,
    gradient_checkpointing: bool | None,
    tf32: bool | None,
    attention: str,
    optim: str,
    dataloader_workers: int | None,
    hub_model: bool,
    explicit: frozenset[str] = frozenset(),
) -> Choices:
    """What this device trains with: `auto` (or None) decided here, the rest checked."""
    dtype = _dtype(device, dtype, explicit)
    if attention == AUTO:
        flash = device.cuda and device.flash_attention and dtype in HALF
        attention = "flash_attention_2" if flash else "sdpa"
    elif attention == "flash_attention_2" and not (device.cuda and device.flash_attention):
        raise TrainingSetupError(
            "--attention flash_attention_2: needs a CUDA GPU and the flash-attn package"
        )
    if optim == AUTO:
        optim = "adamw_torch_fused" if device.cuda else "adamw_torch"
    ampere = device.capability is not None and device.capability >= (8, 0)
    if tf32 and not ampere:
        if "tf32" in explicit:
            raise TrainingSetupError(
                "--tf32: needs an Ampere or newer GPU (compute capability 8.0)"
            )
        tf32 = False
    return Choices(
        dtype=dtype,
        gradient_checkpointing=(
            device.cuda and hub_model if gradient_checkpointing is None else gradient_checkpointing
        ),
        tf32=ampere if tf32 is None else tf32,
        attention=attention,
        optim=optim,
        dataloader_workers=(
            (CUDA_WORKERS if device.cuda else 0)
            if dataloader_workers is None
            else dataloader_workers
        ),
        pin_memory=device.cuda,
    )


def _dtype(device: Device, asked: str, explicit: frozenset[str]) -> str:
    if asked == AUTO:
        if not device.cuda:
            return "float32"
        return "bfloat16" if device.bf16 else "float16"
    if asked == "bfloat16" and device.cuda and not device.bf16:
        if "dtype" in explicit:
            raise TrainingSetupError(
                f"--dtype bfloat16: {device.name} has no bf16 (compute capability "
                f"{device.capability}); use float16 or auto"
            )
        return "float16"
    if asked == "float16" and not device.cuda:
        if "dtype" in explicit:
            raise TrainingSetupError("--dtype float16: needs a CUDA GPU; on the CPU use bfloat16")
        # An older defaults file's float16 meant "half precision where there is a GPU".
        return "float32"
    return asked
