"""Conversations: the chat template that renders them, which of their tokens are the answers,
and a built-in conversational corpus (generated here, nothing to download).

A conversation is split into prompt and completion segments by rendering it turn by turn: the
text up to an assistant turn (with the template's generation prompt) is prompt, what the full
turn adds after it is that turn's completion (its content and the template's end of turn, so the
model learns to stop). That holds for any template that renders a conversation's beginning the
same way whatever follows, as chat templates do; where one does not (a template that rewrites
earlier turns), only the last assistant turn is taken as completion.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from trainlib.errors import TrainingSetupError

ROLES = ("system", "user", "assistant")

# The offline models' template (a tokenizer built in code has none). Role markers as plain text,
# each turn closed by the end-of-sequence token: the same shape as Zephyr's and TinyLlama-Chat's.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

Segment = tuple[str, bool]  # (text, is a completion)


def check_messages(messages: object, where: str) -> list[dict[str, str]]:
    """`messages` as a list of {role, content}, or a one-line error naming `where`."""
    if not isinstance(messages, list) or not messages:
        raise TrainingSetupError(f"{where}: messages: expected a non-empty list of turns")
    turns = []
    for index, turn in enumerate(messages):
        if not isinstance(turn, dict) or not isinstance(turn.get("content"), str):
            raise TrainingSetupError(
                f"{where}: messages[{index}]: expected {{'role': ..., 'content': '...'}}"
            )
        role = turn.get("role")
        if role not in ROLES:
            raise TrainingSetupError(
                f"{where}: messages[{index}].role: {role!r} is not one of {', '.join(ROLES)}"
            )
        turns.append({"role": role, "content": turn["content"]})
    if not any(t["role"] == "assistant" for t in turns):
        raise TrainingSetupError(f"{where}: the conversation has no assistant turn to learn from")
    return turns


def segments(messages: Sequence[dict[str, str]], render) -> list[Segment]:
    """Prompt and completion texts whose concatenation is the rendered conversation (up to its
    last assistant turn). `render(messages, add_generation_prompt)` is the chat template."""
    answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    pieces: list[Segment] = []
    done = ""
    for index in answers:
        before = render(messages[:index], True)
        through = render(messages[: index + 1], False)
        if not (before.startswith(done) and through.startswith(before)):
            return _last_turn_only(messages, answers[-1], render)
        pieces += [(before[len(done) :], False), (through[len(before) :], True)]
        done = through
    return [(text, completion) for text, completion in pieces if text]


def _last_turn_only(messages, last: int, render) -> list[Segment]:
    before = render(messages[:last], True)
    through = render(messages[: last + 1], False)
    if not through.startswith(before):
        raise TrainingSetupError(
            "the chat template renders a conversation differently from its beginning: "
            "cannot tell the answers from the prompt (pass --chat-template FILE)"
        )
    return [(before, False), (through[len(before) :], True)]


# --- The built-in conversational corpus ------------------------------------------------------

_SUBJECTS = ["the cluster", "a worker", "the master", "every node", "the scheduler", "a gpu"]
_SUBJECTS += ["the model", "our job", "the network", "each rank"]
_DUTIES = [
    "trains the adapter",
    "syncs its logs",
    "checks the metrics",
    "launches a checkpoint",
    "collects the gradients",
    "measures the loss",
    "restarts every batch",
    "reports the results",
]
_TAILS = ["before dawn", "over ssh", "on the lan", "without a hitch", "in parallel", "with care"]
_ASKS = ["what does {s} do?", "tell me what {s} does.", "{s}: what is its job?"]
_SYSTEM = "you answer questions about a small training cluster."


def builtin_conversations(count: int = 2400, seed: int = 1234) -> list[list[dict[str, str]]]:
    """Short conversations whose answers are learnable: each subject has one duty (the same in
    every conversation), said with a random tail; some conversations have a system prompt, a
    second sentence or a second question. Lengths vary, as real chat data's do, so packing has
    something to save."""
    duty = {s: _DUTIES[i % len(_DUTIES)] for i, s in enumerate(_SUBJECTS)}
    rng = random.Random(seed)  # noqa: S311 - reproducible text, not secrets

    def answer(subject: str, long: bool) -> str:
        text = f"{subject} {duty[subject]} {rng.choice(_TAILS)}."
        if long and rng.random() < 0.5:
            text += f" then it {rng.choice(_DUTIES)} {rng.choice(_TAILS)}."
        return text

    conversations = []
    for _ in range(count):
        # At most one of: a system prompt, a second sentence, a second question (each
        # conversation stays within the tiny model's 256 byte-tokens).
        extra = rng.choice(["", "", "system", "sentence", "question"])
        turns = [{"role": "system", "content": _SYSTEM}] if extra == "system" else []
        subject = rng.choice(_SUBJECTS)
        turns += [
            {"role": "user", "content": rng.choice(_ASKS).format(s=subject)},
            {"role": "assistant", "content": answer(subject, extra == "sentence")},
        ]
        if extra == "question":
            other = rng.choice(_SUBJECTS)
            turns += [
                {"role": "user", "content": f"and {other}?"},
                {"role": "assistant", "content": answer(other, False)},
            ]
        conversations.append(turns)
    return conversations
