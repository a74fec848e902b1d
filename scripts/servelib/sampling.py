"""The next token of each row, and where a completion's text stops.

Greedy at temperature 0 (the same answer every time); otherwise temperature and top-p sampling,
each choice with a generator of its own, so a request's `seed` gives the same answer whatever
else is in the batch with it.
"""

from __future__ import annotations

import torch


def make_generator(device: torch.device, seed: int | None, choice: int) -> torch.Generator:
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed + choice)
    return generator


def next_token(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> int:
    """One row's next token from its last position's logits (1-D)."""
    if temperature <= 0 or generator is None:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        sorted_probs[before >= top_p] = 0.0  # the smallest set whose mass reaches top_p
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator).item())


def find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    """Where the first stop string begins in `text`, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def safe_prefix(text: str, stops: tuple[str, ...]) -> int:
    """How much of `text` can be sent now: not a trailing partial character, nor an ending that
    could still become a stop string."""
    end = len(text)
    while end and text[end - 1] == "\ufffd":  # a byte sequence not yet complete
        end -= 1
    for stop in stops:
        for size in range(min(len(stop) - 1, end), 0, -1):
            if text[:end].endswith(stop[:size]):
                end -= size
                break
    return max(end, 0)
