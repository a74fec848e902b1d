"""One thread that decodes every waiting request together.

Requests wait in a bounded line; the engine takes as many as fit in a batch (a request's `n`
choices are rows of their own), whatever adapter each names, and decodes them in one loop with a
shared KV cache: prompts left-padded with position ids that skip the padding, one forward pass
per token for the whole batch, a finished row dropped from the cache. Requests that arrive while
a batch runs wait for the next one: concurrent clients share the forward passes, which is where
a server beats a `generate` loop.

Results go back through each request's `sink`, called on the engine's thread: ("delta", choice,
text), ("finish", choice, reason), then ("done", prompt_tokens, completion_tokens), or ("error",
message).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from servelib.models import BASE_ROW, Loaded
from servelib.sampling import find_stop, make_generator, next_token, safe_prefix

log = logging.getLogger(__name__)

Sink = Callable[[tuple], None]


@dataclass
class Request:
    model_id: str
    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    ignore_eos: bool = False  # vLLM's extension: exactly max_tokens (benchmarks)
    sink: Sink = lambda event: None
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Row:
    request: Request
    choice: int
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)
    text: str = ""  # what the tokens up to read_offset decode to, whole characters only
    prefix_offset: int = 0  # incremental detokenizing (as vLLM and TGI do it): the text of
    read_offset: int = 0  # tokens[prefix_offset:read_offset] is known; only the tail is new
    sent: int = 0
    finish: str | None = None


class Full(Exception):
    """The line of waiting requests is full."""


class Engine:
    def __init__(self, loaded: Loaded, *, max_batch: int, max_waiting: int) -> None:
        self.loaded = loaded
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self._waiting: deque[Request] = deque()
        self._wake = threading.Condition()
        self.generated_tokens = 0
        self.submitted = 0  # every request taken in, for the figures and the tests
        self.busy_seconds = 0.0
        eos = loaded.tokenizer.eos_token_id
        self._eos = {eos} if isinstance(eos, int) else set(eos or ())
        self._peft = bool(loaded.adapters)
        self._cache_argument = _cache_argument(loaded.model)

    # -- the line -------------------------------------------------------------------------------
    def submit(self, request: Request) -> None:
        with self._wake:
            if len(self._waiting) >= self.max_waiting:
                raise Full
            self._waiting.append(request)
            self.submitted += 1
            self._wake.notify()

    def waiting(self) -> int:
        with self._wake:
            return len(self._waiting)

    def _take(self) -> list[Request]:
        with self._wake:
            while not self._waiting:
                self._wake.wait()
            batch = [self._waiting.popleft()]
            rows = batch[0].n
            while self._waiting and rows + self._waiting[0].n <= self.max_batch:
                request = self._waiting.popleft()
                batch.append(request)
                rows += request.n
            return batch

    def run_forever(self) -> None:
        while True:
            batch = []
            for request in self._take():
                if request.cancelled.is_set():  # its client left while it waited
                    request.sink(("done", len(request.prompt_ids), 0))
                else:
                    batch.append(request)
            if not batch:
                continue
            started = time.monotonic()
            try:
                self.decode(batch)
            except Exception as exc:  # one bad batch must not end the server
                log.exception("decoding failed")
                for request in batch:
                    request.sink(("error", f"generation failed: {type(exc).__name__}: {exc}"))
            finally:
                self.busy_seconds += time.monotonic() - started

    # -- decoding ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def decode(self, batch: list[Request]) -> None:
        from transformers import DynamicCache

        device = self.loaded.device
        rows = [
            _Row(r, c, make_generator(device, r.seed, c) if r.temperature > 0 else None)
            for r in batch
            for c in range(r.n)
        ]
        width = max(len(row.request.prompt_ids) for row in rows)
        pad = self.loaded.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            prompt = row.request.prompt_ids
            ids[i, width - len(prompt) :] = torch.tensor(prompt)
            mask[i, width - len(prompt) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        live = rows
        pending = list(batch)
        rows_of = {id(r): [row for row in rows if row.request is r] for r in batch}
        logits = self._forward(live, ids, mask, positions, cache)
        while True:
            greedy = logits.argmax(-1).tolist()  # one call for every row that wants it
            for k, row in enumerate(live):
                self._advance(row, logits[k], greedy[k])
            keep = [k for k, row in enumerate(live) if row.finish is None]
            for request in [r for r in pending if all(row.finish for row in rows_of[id(r)])]:
                pending.remove(request)
                completion = sum(len(row.tokens) for row in rows_of[id(request)])
                request.sink(("done", len(request.prompt_ids), completion))
            if not keep:
                return
            if len(keep) < len(live):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                mask, positions = mask[index], positions[index]
                live = [live[k] for k in keep]
            step_ids = torch.tensor([[row.tokens[-1]] for row in live], device=device)
            mask = torch.cat([mask, torch.ones((len(live), 1), dtype=mask.dtype, device=device)], 1)
            positions = positions[:, -1:] + 1
            logits = self._forward(live, step_ids, mask, positions, cache)

    def _forward(self, rows, ids, mask, positions, cache) -> torch.Tensor:
        """One forward pass for every live row. Rows of one model take peft's plain path (the
        adapter set active, or every adapter off for the base); only a batch that mixes models
        pays for peft's per-row path (`adapter_names`)."""
        inputs = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": positions,
            "use_cache": True,
            self._cache_argument: cache,
        }
        model = self.loaded.model
        if not self._peft:
            return model(**inputs).logits[:, -1, :]
        names = [self.loaded.row_name(r.request.model_id) for r in rows]
        if len(set(names)) > 1:
            return model(**inputs, adapter_names=names).logits[:, -1, :]
        if names[0] == BASE_ROW:
            with model.disable_adapter():
                return model(**inputs).logits[:, -1, :]
        if model.active_adapter != names[0]:
            model.set_adapter(names[0])
        return model(**inputs).logits[:, -1, :]

    def _advance(self, row: _Row, logits: torch.Tensor, greedy: int) -> None:
        request = row.request
        if request.cancelled.is_set():
            row.finish = "cancelled"
            return
        if request.temperature > 0:
            token = next_token(logits, request.temperature, request.top_p, row.generator)
        else:
            token = greedy
        row.tokens.append(token)
        self.generated_tokens += 1
        self._detokenize(row)
        text = row.text
        if token in self._eos and not request.ignore_eos:
            row.finish = "stop"
        else:
            cut = find_stop(text, request.stop) if request.stop else None
            if cut is not None:
                row.finish, text = "stop", text[:cut]
            elif (
                len(row.tokens) >= request.max_tokens
                or len(request.prompt_ids) + len(row.tokens) >= self.loaded.context
            ):
                row.finish = "length"
                text += self._undecided(row)  # the last bytes, even as a partial character
        ready = len(text) if row.finish else safe_prefix(text, request.stop)
        if ready > row.sent:
            request.sink(("delta", row.choice, text[row.sent : ready]))
            row.sent = ready
        if row.finish:
            request.sink(("finish", row.choice, row.finish))

    def _text(self, tokens: list[int]) -> str:
        return self.loaded.tokenizer.decode(tokens, skip_special_tokens=True)

    def _detokenize(self, row: _Row) -> None:
        """Extend row.text by what the newest token completes, decoding only the last few
        tokens: decoding the whole answer at every token costs its length squared."""
        known = self._text(row.tokens[row.prefix_offset : row.read_offset])
        now = self._text(row.tokens[row.prefix_offset :])
        if len(now) > len(known) and not now.endswith("\ufffd"):
            row.text += now[len(known) :]
            row.prefix_offset, row.read_offset = row.read_offset, len(row.tokens)

    def _undecided(self, row: _Row) -> str:
        known = self._text(row.tokens[row.prefix_offset : row.read_offset])
        return self._text(row.tokens[row.prefix_offset :])[len(known) :]


def _cache_argument(model) -> str:
    """transformers 5.x names the KV cache `cache` (`past_key_values` is deprecated there);
    earlier versions know only `past_key_values`."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
