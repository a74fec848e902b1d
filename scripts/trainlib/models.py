"""The model to fine-tune: the offline tiny Llama, a local directory, or a hub name; plus LoRA."""

from __future__ import annotations

from pathlib import Path

import torch

from trainlib.errors import TrainingSetupError

TINY = "tiny-llama"
TINY_MAX_POSITIONS = 256
# Models built from a config with the byte tokenizer: nothing to download. The tiny one trains in
# seconds on CPUs (tests, demos); the larger ones are sized for benchmarks and the GPU check.
OFFLINE = {
    TINY: {"hidden": 64, "intermediate": 172, "layers": 2, "heads": 4, "kv_heads": 2},
    "llama-20m": {"hidden": 384, "intermediate": 1024, "layers": 8, "heads": 6, "kv_heads": 2},
    "llama-100m": {"hidden": 768, "intermediate": 2048, "layers": 12, "heads": 12, "kv_heads": 4},
}
OFFLINE_MAX_POSITIONS = {TINY: TINY_MAX_POSITIONS, "llama-20m": 1024, "llama-100m": 2048}


def byte_tokenizer():
    """A byte-level tokenizer defined in code: 256 byte tokens plus <s>, </s>, <pad>, with
    UGRO's default chat template (trainlib.conversations).

    Deterministic and identical on every node, with nothing to download or ship.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from trainlib.conversations import DEFAULT_CHAT_TEMPLATE

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: index for index, symbol in enumerate(alphabet)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    # S106 mistakes these token names for passwords.
    specials = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **specials)
    fast.chat_template = DEFAULT_CHAT_TEMPLATE
    return fast


def offline_llama(tokenizer, seed: int, name: str = TINY, attention: str = "sdpa"):
    """A Llama built from a config (OFFLINE[name]), the same on every rank for one seed."""
    from transformers import LlamaConfig, LlamaForCausalLM

    size = OFFLINE[name]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size["hidden"],
        intermediate_size=size["intermediate"],
        num_hidden_layers=size["layers"],
        num_attention_heads=size["heads"],
        num_key_value_heads=size["kv_heads"],
        max_position_embeddings=OFFLINE_MAX_POSITIONS[name],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    config._attn_implementation = attention
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def tiny_llama(tokenizer, seed: int):
    """The two-layer Llama small enough to train on CPUs in seconds."""
    return offline_llama(tokenizer, seed, TINY)


def max_positions(model) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


def load_model(
    name: str,
    *,
    seed: int,
    load_in_4bit: bool,
    dtype: str,
    cache_dir: str | None,
    attention: str = "sdpa",
):
    """(model, tokenizer) for an offline model (OFFLINE), a local directory, or a hub name."""
    if name in OFFLINE:
        tokenizer = byte_tokenizer()
        return offline_llama(tokenizer, seed, name, attention), tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(name).expanduser()
    if name.startswith((".", "/", "~")) and not local.is_dir():
        raise TrainingSetupError(f"--model {name}: no such model directory")
    source = str(local) if local.is_dir() else name
    kwargs: dict = {"cache_dir": cache_dir, "attn_implementation": attention}
    cuda = torch.cuda.is_available()
    if load_in_4bit and cuda:
        try:
            from transformers import BitsAndBytesConfig
        except ImportError:
            raise TrainingSetupError("4-bit loading needs bitsandbytes") from None
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_compute_dtype=getattr(torch, dtype, torch.float16)
        )
    # Otherwise the weights stay float32 and `dtype` is the autocast precision (fp16/bf16
    # mixed precision): LoRA parameters in half precision cannot be unscaled by AMP.
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, cache_dir=cache_dir)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingSetupError(f"--model {name}: cannot load it: {first}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if "quantization_config" in kwargs:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    return model, tokenizer


def add_lora(model, *, rank: int, alpha: float, dropout: float, targets: list[str], bias: str):
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise TrainingSetupError(
            f"--target-modules: {', '.join(missing)} not in the model "
            f"(it has e.g. {', '.join(sorted(n for n in names if n.endswith('proj'))[:6])})"
        )
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        bias=bias,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)
