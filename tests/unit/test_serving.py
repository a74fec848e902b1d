"""UGRO's own inference server (scripts/servelib), in this process: a tiny Llama with two LoRA
adapters behind uvicorn on a loopback port, asked with OpenAI's own client and with raw HTTP.

What crosses a process boundary (servectl's start and stop, the controller, SSH) is tested on the
sandbox in tests/integration/test_serve.py; here, the API, the engine and the limits.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

KEY = "k" * 32


def _tiny_models(trainlib: SimpleNamespace, root: Path) -> dict[str, Path]:
    """A saved tiny base and two adapters whose LoRA weights are random (a fresh adapter's B
    matrices are zero: it would answer exactly as the base does)."""
    import torch

    models = trainlib.models
    tokenizer = models.byte_tokenizer()
    base = models.offline_llama(tokenizer, seed=0)
    paths = {"base": root / "base"}
    base.save_pretrained(str(paths["base"]))
    tokenizer.save_pretrained(str(paths["base"]))
    for index, name in enumerate(("alpha", "beta")):
        model = models.offline_llama(tokenizer, seed=0)
        lora = models.add_lora(
            model, rank=4, alpha=8, dropout=0.0, targets=["q_proj", "v_proj"], bias="none"
        )
        generator = torch.Generator().manual_seed(100 + index)
        with torch.no_grad():
            for parameter_name, parameter in lora.named_parameters():
                if "lora_B" in parameter_name:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
        paths[name] = root / name
        lora.save_pretrained(str(paths[name]))
        tokenizer.save_pretrained(str(paths[name]))
    return paths


class Running:
    def __init__(self, url: str, server: Any, port: int) -> None:
        self.url, self.server, self.port = url, server, port

    def raw(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            answer = connection.getresponse()
            return answer.status, dict(answer.getheaders()), answer.read()
        finally:
            connection.close()

    def post(
        self, path: str, data: Any, *, key: str | None = KEY
    ) -> tuple[int, dict[str, str], Any]:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        status, head, body = self.raw("POST", path, json.dumps(data).encode(), headers)
        return status, head, json.loads(body) if body.startswith(b"{") else body


@pytest.fixture(scope="module")
def served(
    trainlib: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    import uvicorn
    from servelib.app import Server, create_app
    from servelib.spec import Adapter, ServeSpec

    paths = _tiny_models(trainlib, tmp_path_factory.mktemp("models"))
    spec = ServeSpec(
        name="unit",
        base_id="tiny-llama",
        base_path=str(paths["base"]),
        adapters=(Adapter("alpha", str(paths["alpha"])), Adapter("beta", str(paths["beta"]))),
        host="127.0.0.1",
        port=0,
        key_file=None,
        max_tokens_cap=64,
        max_per_client=4,
    )
    server = Server(spec, KEY)
    app = create_app(server, load_on_start=False)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    runner = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=runner.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    running = Running(f"http://127.0.0.1:{port}/v1", server, port)
    deadline = time.monotonic() + 30
    while not runner.started and time.monotonic() < deadline:
        time.sleep(0.02)
    # Before the models are loaded: /health says so, and the API asks to come back.
    status, _, body = running.raw("GET", "/health")
    assert status == 503 and b"Loading model" in body
    status, head, _ = running.post("/v1/completions", {"model": "alpha", "prompt": "x"})
    assert status == 503 and head.get("retry-after") == "5"
    server.load()
    assert running.raw("GET", "/health")[0] == 200
    yield running
    runner.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def client(served: Running) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=served.url, api_key=KEY, max_retries=0)


CHAT = [{"role": "user", "content": "What is the capital of France?"}]


def test_models_lists_the_base_and_each_adapter_with_its_parent(client: Any) -> None:
    models = {m.id: m for m in client.models.list()}
    assert list(models) == ["tiny-llama", "alpha", "beta"]
    assert models["alpha"].model_extra["parent"] == "tiny-llama"
    assert models["tiny-llama"].model_extra["parent"] is None


def test_a_chat_answer_counts_its_tokens_and_says_why_it_ended(client: Any) -> None:
    answer = client.chat.completions.create(
        model="alpha", messages=CHAT, max_tokens=12, temperature=0
    )
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert answer.usage.completion_tokens <= 12
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert answer.usage.prompt_tokens > len("What is the capital of France?")  # the template's


def test_greedy_is_deterministic_and_a_stream_says_the_same(client: Any) -> None:
    def whole() -> str:
        answer = client.chat.completions.create(
            model="beta", messages=CHAT, max_tokens=24, temperature=0
        )
        return str(answer.choices[0].message.content)

    first = whole()
    assert whole() == first
    stream = client.chat.completions.create(
        model="beta",
        messages=CHAT,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, reasons, usage = "", [], None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            reasons.append(chunk.choices[0].finish_reason)
        else:
            usage = chunk.usage
    assert text == first
    assert reasons[-1] in ("stop", "length") and all(r is None for r in reasons[:-1])
    assert usage is not None and usage.completion_tokens > 0


def test_the_stream_ends_with_done(served: Running) -> None:
    body = {"model": "alpha", "prompt": "hello", "max_tokens": 5, "stream": True}
    status, head, raw = served.raw(
        "POST",
        "/v1/completions",
        json.dumps(body).encode(),
        {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert status == 200 and head["content-type"].startswith("text/event-stream")
    events = [e for e in raw.decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_each_adapter_answers_as_itself_and_not_as_the_base(client: Any) -> None:
    answers = {
        model: client.completions.create(
            model=model, prompt="Once upon a time", max_tokens=16, temperature=0
        )
        .choices[0]
        .text
        for model in ("tiny-llama", "alpha", "beta")
    }
    assert len(set(answers.values())) == 3, answers


def test_a_batch_of_mixed_adapters_decodes_as_each_alone(served: Running) -> None:
    """Left padding, position ids and peft's per-row adapters: rows decoded together give the
    tokens each gives alone."""
    from servelib.engine import Request
    from servelib.models import encode_prompt

    engine = served.server.engine
    tokenizer = served.server.loaded.tokenizer

    def request(model: str, prompt: str, events: list[tuple]) -> Request:
        return Request(
            model_id=model,
            prompt_ids=encode_prompt(tokenizer, prompt),
            max_tokens=10,
            temperature=0,
            sink=events.append,
        )

    cases = [("alpha", "a short one"), ("tiny-llama", "a much longer prompt here"), ("beta", "hi")]
    alone = []
    for model, prompt in cases:
        events: list[tuple] = []
        engine.decode([request(model, prompt, events)])
        alone.append("".join(e[2] for e in events if e[0] == "delta"))
    logs: list[list[tuple]] = [[], [], []]
    engine.decode([request(m, p, log) for (m, p), log in zip(cases, logs, strict=True)])
    together = ["".join(e[2] for e in log if e[0] == "delta") for log in logs]
    assert together == alone


def test_a_seed_repeats_a_sampled_answer_and_n_gives_several(client: Any) -> None:
    def sample() -> list[str]:
        answer = client.completions.create(
            model="alpha", prompt="x", max_tokens=12, temperature=1.0, top_p=0.9, seed=7, n=3
        )
        return [c.text for c in sorted(answer.choices, key=lambda c: c.index)]

    first = sample()
    assert sample() == first
    assert len(first) == 3 and len(set(first)) > 1


def test_a_stop_string_ends_the_answer_before_it(client: Any) -> None:
    full = (
        client.completions.create(model="beta", prompt="Once", max_tokens=30, temperature=0)
        .choices[0]
        .text
    )
    # A printable ASCII character the answer contains (an untrained model writes any bytes).
    cut = next(ch for ch in full[1:] if ch.isascii() and ch.isalnum())
    stop = full.index(cut)
    answer = client.completions.create(
        model="beta", prompt="Once", max_tokens=30, temperature=0, stop=[cut]
    ).choices[0]
    assert answer.text == full[:stop]
    assert answer.finish_reason == "stop"


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ({"model": "gamma", "prompt": "x"}, 404, "model", "model_not_found"),
        ({"prompt": "x"}, 400, "model", None),
        ({"model": "alpha", "prompt": ""}, 400, "prompt", None),
        ({"model": "alpha", "prompt": "x", "max_tokens": 65}, 400, "max_tokens", None),
        ({"model": "alpha", "prompt": "x", "max_tokens": 0}, 400, "max_tokens", None),
        ({"model": "alpha", "prompt": "x", "temperature": 3}, 400, "temperature", None),
        ({"model": "alpha", "prompt": "x", "n": 9}, 400, "n", None),
        ({"model": "alpha", "prompt": "x", "stop": [1]}, 400, "stop", None),
        ({"model": "alpha", "prompt": "y" * 300}, 400, "prompt", "context_length_exceeded"),
        (
            {"model": "alpha", "prompt": "y" * 200, "max_tokens": 60},
            400,
            "max_tokens",
            "context_length_exceeded",
        ),
    ],
)
def test_bad_requests_get_openai_shaped_errors(
    served: Running, body: dict[str, Any], status: int, param: str, code: str | None
) -> None:
    got, _, answer = served.post("/v1/completions", body)
    assert got == status
    assert set(answer["error"]) == {"message", "type", "param", "code"}
    assert answer["error"]["param"] == param and answer["error"]["code"] == code
    assert answer["error"]["message"]


def test_malformed_json_a_huge_body_and_a_missing_key_are_refused(served: Running) -> None:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    status, _, body = served.raw("POST", "/v1/completions", b"{not json", headers)
    assert status == 400 and b"not valid JSON" in body
    status, _, body = served.raw("POST", "/v1/completions", b"x" * (1 << 20 + 1), headers)
    assert status == 413
    status, _, answer = served.post("/v1/completions", {"model": "alpha", "prompt": "x"}, key=None)
    assert status == 401 and answer["error"]["code"] == "invalid_api_key"
    status, _, answer = served.post(
        "/v1/completions", {"model": "alpha", "prompt": "x"}, key="wrong" * 8
    )
    assert status == 401
    assert served.raw("GET", "/v1/models")[0] == 401
    assert served.raw("GET", "/health")[0] == 200  # open: a probe needs no key


def test_too_many_from_one_client_or_a_full_line_get_retry_after(served: Running) -> None:
    server = served.server
    server.in_flight["127.0.0.1"] = server.spec.max_per_client
    try:
        status, head, answer = served.post("/v1/completions", {"model": "alpha", "prompt": "x"})
    finally:
        del server.in_flight["127.0.0.1"]
    assert status == 429 and head["retry-after"] == "1"
    assert answer["error"]["type"] == "rate_limit_error"
    engine = server.engine
    engine.max_waiting, waiting = 0, engine.max_waiting
    try:
        status, head, _ = served.post("/v1/completions", {"model": "alpha", "prompt": "x"})
    finally:
        engine.max_waiting = waiting
    assert status == 503 and head["retry-after"] == "1"
    status, _, answer = served.post("/v1/completions", {"model": "alpha", "prompt": "x"})
    assert status == 200  # and it goes on serving


def test_a_tokenizer_without_a_chat_template_serves_completions_only(
    trainlib: SimpleNamespace, served: Running
) -> None:
    from servelib.openai_api import ApiError, parse

    loaded = served.server.loaded
    plain = SimpleNamespace(**{**loaded.__dict__, "chat": False})
    with pytest.raises(ApiError) as refused:
        parse(
            {"model": "alpha", "messages": CHAT},
            chat=True,
            loaded=plain,
            model_ids=["alpha"],
            cap=8,
        )
    assert refused.value.status == 400 and refused.value.code == "chat_template_missing"
    assert "/v1/completions" in refused.value.message
    parsed = parse(
        {"model": "alpha", "prompt": "x"}, chat=False, loaded=plain, model_ids=["alpha"], cap=8
    )
    assert parsed.request.max_tokens == 8


def test_stats_count_requests_and_never_show_the_key(served: Running) -> None:
    status, _, body = served.raw("GET", "/ugro/stats", headers={"Authorization": f"Bearer {KEY}"})
    stats = json.loads(body)
    assert status == 200 and stats["requests"] > 0 and stats["latency_p50_ms"] > 0
    assert stats["tokens_per_s"] > 0 and KEY not in body.decode()


def test_safe_prefix_holds_back_a_possible_stop_and_a_partial_character(
    trainlib: SimpleNamespace,
) -> None:
    from servelib.sampling import find_stop, safe_prefix

    assert safe_prefix("hello wor", ("world",)) == len("hello ")
    assert safe_prefix("hello", ("xyz",)) == 5
    assert safe_prefix("caf\ufffd", ()) == 3
    assert find_stop("a\nb END c", ("END", "\n")) == 1


def test_clients_that_leave_are_counted_out(served: Running) -> None:
    """A client gone before its stream began, or in the middle of it, frees its place: the
    engine ends every request it took, and that is where a client's count goes down."""
    body = json.dumps({"model": "alpha", "prompt": "x", "max_tokens": 60, "stream": True})
    head = (
        f"POST /v1/completions HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    server = served.server
    clients = server.spec.max_per_client + 2
    engine = server.engine
    assert engine is not None
    submitted, before = engine.submitted, engine.submitted + server.stats.refused
    for _ in range(clients):
        with socket.create_connection(("127.0.0.1", served.port)) as sock:
            sock.sendall((head + body).encode())
    # Each of them is taken in or refused; counting them there, not by watching in_flight
    # (which a quick engine empties again between two looks), cannot miss them.
    deadline = time.monotonic() + 30
    while engine.submitted + server.stats.refused - before < clients:
        assert time.monotonic() < deadline, "the requests never arrived"
        time.sleep(0.01)
    assert engine.submitted + server.stats.refused - before == clients
    assert engine.submitted > submitted, "none of them was taken in"
    deadline = time.monotonic() + 30  # their clients are gone: they end, and are counted out
    while server.in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not served.server.in_flight
    status, _, _ = served.post("/v1/completions", {"model": "alpha", "prompt": "x"})
    assert status == 200
