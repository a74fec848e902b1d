"""The base model with every adapter loaded as a named peft adapter, and the tokenizer.

One base in memory serves them all: a request names its adapter (its job's name) or the base,
and peft applies each row's adapter within one batch (`adapter_names`), so requests for
different adapters share a forward pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from servelib.spec import ServeSpec

log = logging.getLogger(__name__)

BASE_ROW = "__base__"  # peft's name for "no adapter" in a mixed batch


@dataclass
class Loaded:
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    context: int  # the model's window, in tokens
    chat: bool  # whether the tokenizer has a chat template
    adapters: tuple[str, ...]

    def row_name(self, model_id: str) -> str:
        return model_id if model_id in self.adapters else BASE_ROW


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load(spec: ServeSpec) -> Loaded:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device()
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    kwargs = {"cache_dir": spec.cache_dir}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = AutoModelForCausalLM.from_pretrained(spec.base_path, **kwargs)
    # The tokenizer saved with the adapters is the one training used (its chat template too).
    source = spec.adapters[0].path if spec.adapters else spec.base_path
    tokenizer = AutoTokenizer.from_pretrained(source, cache_dir=spec.cache_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if spec.adapters:
        from peft import PeftModel

        first, *rest = spec.adapters
        model = PeftModel.from_pretrained(model, first.path, adapter_name=first.model_id)
        for adapter in rest:
            model.load_adapter(adapter.path, adapter_name=adapter.model_id)
    model.to(device)
    model.eval()
    context = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    log.info(
        "loaded %s with %d adapter(s) on %s, context %d",
        spec.base_id,
        len(spec.adapters),
        device,
        context,
    )
    return Loaded(
        model=model,
        tokenizer=tokenizer,
        device=device,
        context=context,
        chat=bool(getattr(tokenizer, "chat_template", None)),
        adapters=tuple(a.model_id for a in spec.adapters),
    )


def encode_prompt(tokenizer, text: str) -> list[int]:
    """As training encoded an example's first piece: with the tokenizer's beginning-of-sequence
    token, unless the text (a rendered chat template) already starts with it."""
    bos = getattr(tokenizer, "bos_token", None)
    special = not (bos and text.startswith(bos))
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def render_chat(tokenizer, messages: list[dict]) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def adapter_dirs_exist(spec: ServeSpec) -> list[str]:
    return [a.path for a in spec.adapters if not Path(a.path, "adapter_config.json").is_file()]
