"""The server's routes (Starlette), its key, and its limits.

`/health` is open: 503 while the models load (as llama.cpp's server answers), then 200. Every
other route asks for the deployment's bearer key when the server listens beyond loopback. A
request is refused before it costs anything: a body over the limit (413), JSON that does not
parse (400), a client with too many requests in flight (429), a full line of waiting requests
(503); both of the last carry Retry-After. A stream whose client hangs up is cancelled: its rows
leave the batch at the next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from servelib import models
from servelib.engine import Engine, Full
from servelib.openai_api import Answer, ApiError, Parsed, parse
from servelib.spec import ServeSpec
from servelib.stats import Stats

log = logging.getLogger(__name__)


class Server:
    """What the routes share: the spec, the loaded models and engine once ready, the stats."""

    def __init__(self, spec: ServeSpec, key: str | None) -> None:
        self.spec = spec
        self.key = key
        self.engine: Engine | None = None
        self.loaded: models.Loaded | None = None
        self.stats = Stats()
        self.in_flight: Counter[str] = Counter()

    def load(self, loader: Callable[[ServeSpec], models.Loaded] = models.load) -> None:
        """Load the models and start the engine (on a thread: /health answers meanwhile)."""
        try:
            loaded = loader(self.spec)
        except Exception as exc:
            log.error("cannot load the models: %s: %s", type(exc).__name__, exc)
            log.debug("load failure", exc_info=True)
            os._exit(3)  # the deployment's controller sees the server gone and says why
        engine = Engine(loaded, max_batch=self.spec.max_batch, max_waiting=self.spec.max_waiting)
        threading.Thread(target=engine.run_forever, name="engine", daemon=True).start()
        self.loaded, self.engine = loaded, engine
        log.info("serving %s", ", ".join(self.spec.model_ids))

    # -- checks -----------------------------------------------------------------------------------
    def check_key(self, request: HttpRequest) -> None:
        if self.key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), self.key):
            raise ApiError(
                401,
                "a valid bearer key is required (Authorization: Bearer <key>; the key is in "
                "the deployment's api_key file on the master)",
                code="invalid_api_key",
            )

    def ready(self) -> tuple[models.Loaded, Engine]:
        if self.loaded is None or self.engine is None:
            raise ApiError(
                503,
                "the models are still loading",
                kind="server_error",
                code="loading",
                retry_after=5,
            )
        return self.loaded, self.engine

    async def body(self, request: HttpRequest) -> Any:
        limit = self.spec.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"the body is over {limit} bytes", code="body_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"the body is over {limit} bytes", code="body_too_large")
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks))
        except ValueError as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}") from None

    # -- routes -----------------------------------------------------------------------------------
    async def health(self, request: HttpRequest) -> Response:
        if self.engine is None:
            return JSONResponse({"error": {"code": 503, "message": "Loading model"}}, 503)
        return JSONResponse({"status": "ok"})

    async def models(self, request: HttpRequest) -> Response:
        self.check_key(request)
        self.ready()
        created = int(self.stats.started)
        data = [_model(self.spec.base_id, created, None)]
        data += [_model(a.model_id, created, self.spec.base_id) for a in self.spec.adapters]
        return JSONResponse({"object": "list", "data": data})

    async def stats_view(self, request: HttpRequest) -> Response:
        self.check_key(request)
        engine = self.engine
        view = self.stats.view(
            generated=engine.generated_tokens if engine else 0,
            busy=engine.busy_seconds if engine else 0.0,
            waiting=engine.waiting() if engine else 0,
        )
        return JSONResponse({**view, "ready": engine is not None, "models": self.spec.model_ids})

    async def completions(self, request: HttpRequest) -> Response:
        return await self._answer(request, chat=False)

    async def chat(self, request: HttpRequest) -> Response:
        return await self._answer(request, chat=True)

    async def _answer(self, request: HttpRequest, *, chat: bool) -> Response:
        self.check_key(request)
        loaded, engine = self.ready()
        client = request.client.host if request.client else "-"
        if self.in_flight[client] >= self.spec.max_per_client:
            self.stats.refuse()
            raise ApiError(
                429,
                f"{client} has {self.in_flight[client]} requests in flight; at most "
                f"{self.spec.max_per_client} at once",
                kind="rate_limit_error",
                code="rate_limit_exceeded",
                retry_after=1,
            )
        parsed = parse(
            await self.body(request),
            chat=chat,
            loaded=loaded,
            model_ids=self.spec.model_ids,
            cap=self.spec.max_tokens_cap,
        )
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple] = asyncio.Queue()

        counted = [True]

        def deliver(event: tuple) -> None:
            events.put_nowait(event)
            if event[0] in ("done", "error") and counted[0]:
                # The engine ends every request it took (a cancelled one too): counting it out
                # here, not where the response ends, holds even for a client gone before its
                # stream began.
                counted[0] = False
                self._release(client)

        parsed.request.sink = lambda event: loop.call_soon_threadsafe(deliver, event)
        self.in_flight[client] += 1
        try:
            engine.submit(parsed.request)
        except Full:
            self._release(client)
            self.stats.refuse()
            raise ApiError(
                503,
                f"the server is busy: {engine.max_waiting} requests are waiting",
                kind="server_error",
                code="overloaded",
                retry_after=1,
            ) from None
        started = time.monotonic()
        if parsed.stream:
            return StreamingResponse(
                self._stream(parsed, events, started),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        answer = Answer(parsed)
        done = False
        try:
            first = await self._collect(events, answer, started)
            done = True
        finally:
            if not done:  # the client left: its rows leave the batch at the next token
                parsed.request.cancelled.set()
        self.stats.answered(time.monotonic() - started, first)
        return JSONResponse(answer.whole())

    async def _collect(self, events: asyncio.Queue, answer: Answer, started: float) -> float | None:
        first = None
        while True:
            event = await events.get()
            if event[0] == "error":
                self.stats.fail()
                raise ApiError(500, event[1], kind="server_error")
            if event[0] == "delta" and first is None:
                first = time.monotonic() - started
            answer.add(event)
            if event[0] == "done":
                return first

    async def _stream(
        self, parsed: Parsed, events: asyncio.Queue, started: float
    ) -> AsyncIterator[str]:
        answer = Answer(parsed)
        first, done = None, False
        try:
            while True:
                event = await events.get()
                if event[0] == "error":
                    self.stats.fail()
                    yield _sse(ApiError(500, event[1], kind="server_error").body())
                    break
                if event[0] == "delta" and first is None:
                    first = time.monotonic() - started
                answer.add(event)
                chunk = answer.chunk(event, include_usage=parsed.include_usage)
                if chunk is not None:
                    yield _sse(chunk)
                if event[0] == "done":
                    done = True
                    self.stats.answered(time.monotonic() - started, first)
                    break
            yield "data: [DONE]\n\n"
        finally:
            if not done:
                parsed.request.cancelled.set()

    def _release(self, client: str) -> None:
        self.in_flight[client] -= 1
        if self.in_flight[client] <= 0:
            del self.in_flight[client]


def _model(model_id: str, created: int, parent: str | None) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": created,
        "owned_by": "ugro",
        "parent": parent,
        "root": parent or model_id,
    }


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _api_error(request: HttpRequest, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def create_app(server: Server, *, load_on_start: bool = True) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if load_on_start:
            threading.Thread(target=server.load, name="load", daemon=True).start()
        yield

    return Starlette(
        routes=[
            Route("/health", server.health),
            Route("/v1/models", server.models),
            Route("/v1/completions", server.completions, methods=["POST"]),
            Route("/v1/chat/completions", server.chat, methods=["POST"]),
            Route("/ugro/stats", server.stats_view),
        ],
        exception_handlers={ApiError: _api_error},
        lifespan=lifespan,
    )
