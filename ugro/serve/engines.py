"""Which engine serves a deployment: vLLM, or UGRO's own server (transformers + peft), and why.

`auto` takes vLLM where it can serve these adapters well: a node with a CUDA GPU whose training
environment has vllm, and adapters vLLM accepts. vLLM refuses an adapter that targets `lm_head`
or has `modules_to_save` (vllm#9280, #4186); its rank limit is a flag, set from the adapters
(`--max-lora-rank`, one of the sizes it supports). Otherwise UGRO's own server, with the reason
said. An engine asked for by name that cannot serve here is refused, never swapped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ugro.core.errors import UsageError
from ugro.serve.adapters import JobAdapter

AUTO, VLLM, TRANSFORMERS = "auto", "vllm", "transformers"
ENGINES = (AUTO, VLLM, TRANSFORMERS)
# The LoRA ranks vLLM's --max-lora-rank accepts.
VLLM_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
# Leave room for a display and other processes on a desktop GPU: vLLM refuses to start when the
# free memory is below the fraction it is told to take (vllm#20305).
GPU_HEADROOM = 0.9


@dataclass(frozen=True)
class NodeFacts:
    """What a fresh look at a node found (ugro.serve.placement.look)."""

    cuda: bool = False
    vllm: bool = False
    free_bytes: int = 0  # free GPU memory on a CUDA node, else available RAM
    total_bytes: int = 0
    gpu: str | None = None


@dataclass(frozen=True)
class Choice:
    engine: str
    why: str


def vllm_obstacles(adapters: Sequence[JobAdapter]) -> list[str]:
    """Why vLLM cannot serve these adapters (an empty list: it can)."""
    problems = []
    for adapter in adapters:
        if "lm_head" in adapter.targets:
            problems.append(f"{adapter.model_id}'s adapter targets lm_head")
        if adapter.modules_to_save:
            problems.append(
                f"{adapter.model_id}'s adapter saves whole modules "
                f"({', '.join(adapter.modules_to_save)})"
            )
        if adapter.rank > VLLM_RANKS[-1]:
            problems.append(
                f"{adapter.model_id}'s LoRA rank {adapter.rank} is over {VLLM_RANKS[-1]}"
            )
    return problems


def choose(requested: str, node: str, facts: NodeFacts, adapters: Sequence[JobAdapter]) -> Choice:
    if requested not in ENGINES:
        raise UsageError(f"--engine {requested}: expected one of {', '.join(ENGINES)}")
    if requested == TRANSFORMERS:
        return Choice(TRANSFORMERS, "asked for")
    obstacles = []
    if not facts.cuda:
        obstacles.append(f"{node} has no CUDA GPU")
    elif not facts.vllm:
        obstacles.append(f"{node}'s training environment has no vllm (pip install vllm)")
    obstacles += vllm_obstacles(adapters)
    if requested == VLLM and obstacles:
        raise UsageError(f"--engine vllm cannot serve here: {'; '.join(obstacles)}")
    if obstacles:
        return Choice(TRANSFORMERS, "not vLLM: " + "; ".join(obstacles))
    return Choice(VLLM, "a CUDA GPU with vllm")


def vllm_arguments(
    *,
    base: str,
    adapters: Sequence[tuple[str, str]],
    max_rank: int,
    host: str,
    port: int,
    facts: NodeFacts,
    context: int | None = None,
) -> list[str]:
    """`python -m vllm.entrypoints.openai.api_server`'s arguments: the flags from the adapters
    (the largest rank, rounded up to a size vLLM supports; as many LoRA slots as adapters) and
    the GPU share from the card's free memory. The key goes in VLLM_API_KEY, not here."""
    rank = next(r for r in VLLM_RANKS if r >= max(max_rank, 1))
    share = GPU_HEADROOM
    if facts.total_bytes:
        share = round(min(GPU_HEADROOM, GPU_HEADROOM * facts.free_bytes / facts.total_bytes), 2)
    arguments = [
        "--model",
        base,
        "--host",
        host,
        "--port",
        str(port),
        "--gpu-memory-utilization",
        str(share),
    ]
    if adapters:
        arguments += ["--enable-lora", "--max-lora-rank", str(rank)]
        arguments += ["--max-loras", str(len(adapters)), "--lora-modules"]
        arguments += [f"{name}={path}" for name, path in adapters]
    if context:
        arguments += ["--max-model-len", str(context)]
    return arguments
