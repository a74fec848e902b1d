"""OpenAI's API as its clients expect it: requests checked field by field, answers and stream
chunks shaped as OpenAI's, errors as {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from servelib.engine import Request
from servelib.models import Loaded, encode_prompt, render_chat

MAX_CHOICES = 8
MAX_STOPS = 4


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind
        self.param, self.code, self.retry_after = param, code, retry_after

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass
class Parsed:
    request: Request
    chat: bool
    stream: bool
    include_usage: bool


def parse(body: Any, *, chat: bool, loaded: Loaded, model_ids: list[str], cap: int) -> Parsed:
    """The engine's request for a /v1/completions or /v1/chat/completions body."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str):
        raise ApiError(400, "'model' is required: one of " + ", ".join(model_ids), param="model")
    if model not in model_ids:
        raise ApiError(
            404,
            f"The model `{model}` does not exist; this server has {', '.join(model_ids)}",
            param="model",
            code="model_not_found",
        )
    if chat:
        if not loaded.chat:
            raise ApiError(
                400,
                f"`{model}` has no chat template (its tokenizer has none): "
                "use /v1/completions with a prompt",
                param="messages",
                code="chat_template_missing",
            )
        text = render_chat(loaded.tokenizer, _messages(body.get("messages")))
    else:
        text = _prompt(body.get("prompt"))
    prompt_ids = encode_prompt(loaded.tokenizer, text)
    room = loaded.context - len(prompt_ids)
    key = "max_completion_tokens" if chat and "max_completion_tokens" in body else "max_tokens"
    max_tokens = body.get(key)
    if room < 1:
        raise ApiError(
            400,
            f"This model's maximum context length is {loaded.context} tokens; the prompt has "
            f"{len(prompt_ids)}",
            param="messages" if chat else "prompt",
            code="context_length_exceeded",
        )
    if max_tokens is None:
        max_tokens = min(cap, room)
    elif not _integer(max_tokens) or max_tokens < 1:
        raise ApiError(400, f"'{key}' must be a positive integer", param=key)
    elif max_tokens > cap:
        raise ApiError(400, f"'{key}' is {max_tokens}; this server allows at most {cap}", param=key)
    elif len(prompt_ids) + max_tokens > loaded.context:
        raise ApiError(
            400,
            f"This model's maximum context length is {loaded.context} tokens; you asked for "
            f"{len(prompt_ids) + max_tokens} ({len(prompt_ids)} in the prompt, {max_tokens} "
            "in the completion)",
            param=key,
            code="context_length_exceeded",
        )
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0:
        raise ApiError(400, "'top_p' must be above 0", param="top_p")
    n = body.get("n", 1)
    if not _integer(n) or not 1 <= n <= MAX_CHOICES:
        raise ApiError(400, f"'n' must be an integer from 1 to {MAX_CHOICES}", param="n")
    seed = body.get("seed")
    if seed is not None and not _integer(seed):
        raise ApiError(400, "'seed' must be an integer", param="seed")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false", param="stream")
    ignore_eos = body.get("ignore_eos", False)  # vLLM's extension, for benchmarks
    if not isinstance(ignore_eos, bool):
        raise ApiError(400, "'ignore_eos' must be true or false", param="ignore_eos")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object", param="stream_options")
    request = Request(
        model_id=model,
        prompt_ids=prompt_ids,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=_stops(body.get("stop")),
        seed=seed,
        n=n,
        ignore_eos=ignore_eos,
    )
    return Parsed(request, chat, stream, bool(options.get("include_usage")))


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(body: dict, name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ApiError(400, f"'{name}' must be a number from {low:g} to {high:g}", param=name)
    return float(value)


def _prompt(prompt: Any) -> str:
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise ApiError(400, "'prompt' must be a non-empty string", param="prompt")
    return prompt


def _messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", param="messages")
    turns = []
    for index, turn in enumerate(messages):
        content = turn.get("content") if isinstance(turn, dict) else None
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            parts = [p.get("text") for p in content if isinstance(p, dict)]
            content = "".join(p for p in parts if isinstance(p, str))
        role = turn.get("role") if isinstance(turn, dict) else None
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            raise ApiError(
                400,
                f"messages[{index}] must be {{'role': system|user|assistant, 'content': text}}",
                param=f"messages[{index}]",
            )
        turns.append({"role": role, "content": content})
    return turns


def _stops(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if (
        not isinstance(stops, list)
        or len(stops) > MAX_STOPS
        or not all(isinstance(s, str) and s for s in stops)
    ):
        raise ApiError(400, f"'stop' must be a string or up to {MAX_STOPS} strings", param="stop")
    return tuple(stops)


# --- answers -------------------------------------------------------------------------------------


class Answer:
    """One request's answer, built from the engine's events."""

    def __init__(self, parsed: Parsed) -> None:
        self.chat = parsed.chat
        self.model = parsed.request.model_id
        prefix = "chatcmpl" if self.chat else "cmpl"
        self.id = f"{prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        n = parsed.request.n
        self.texts = [""] * n
        self.finish: list[str | None] = [None] * n
        self.usage: dict[str, int] | None = None
        self.started = [False] * n

    @property
    def object(self) -> str:
        return "chat.completion" if self.chat else "text_completion"

    def add(self, event: tuple) -> None:
        kind = event[0]
        if kind == "delta":
            self.texts[event[1]] += event[2]
        elif kind == "finish":
            self.finish[event[1]] = "stop" if event[2] == "cancelled" else event[2]
        elif kind == "done":
            self.usage = {
                "prompt_tokens": event[1],
                "completion_tokens": event[2],
                "total_tokens": event[1] + event[2],
            }

    def whole(self) -> dict[str, Any]:
        choices = []
        for index, text in enumerate(self.texts):
            choice: dict[str, Any] = {"index": index, "logprobs": None}
            if self.chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            choice["finish_reason"] = self.finish[index]
            choices.append(choice)
        return {**self._head(self.object), "choices": choices, "usage": self.usage}

    def chunk(self, event: tuple, *, include_usage: bool) -> dict[str, Any] | None:
        """The stream chunk for an engine event (None: nothing to send)."""
        kind = event[0]
        head = self._head("chat.completion.chunk" if self.chat else "text_completion")
        extra = {"usage": None} if include_usage else {}
        if kind == "delta":
            return {**head, "choices": [self._choice(event[1], event[2], None)], **extra}
        if kind == "finish":
            reason = "stop" if event[2] == "cancelled" else event[2]
            return {**head, "choices": [self._choice(event[1], None, reason)], **extra}
        if kind == "done" and include_usage:
            return {**head, "choices": [], "usage": self.usage}
        return None

    def _choice(self, index: int, text: str | None, reason: str | None) -> dict[str, Any]:
        if not self.chat:
            return {"index": index, "text": text or "", "logprobs": None, "finish_reason": reason}
        delta: dict[str, Any] = {}
        if not self.started[index]:
            delta["role"] = "assistant"
            self.started[index] = True
        if text is not None:
            delta["content"] = text
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}
