"""The serving page's prompt box: a chat or completion request sent through the dashboard to a
deployment, its answer streamed back as the server sends it.

The browser never sees the deployment's key: the dashboard adds it here, on the master, after
its own token gate has let the request in. This is the dashboard's one route that is not a GET,
so it refuses what a page elsewhere could send: a body that is not JSON (a cross-site form can
only send text or form data without a preflight, which nothing here answers), or an Origin
other than the dashboard's own.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ugro.core.cluster import Cluster
from ugro.core.errors import UgroError
from ugro.core.layout import check_name
from ugro.records.deployments import SERVING, Deployment, DeploymentFiles, deployments_root

MAX_BODY = 64 * 1024
PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
TIMEOUT_S = 300


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def try_deployment(cluster: Cluster, request: Request) -> Response:
    kind = request.path_params["kind"]
    if kind not in PATHS:
        return _error(f"{kind!r}: expected chat or completions", 404)
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return _error("the body must be application/json", 415)
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        return _error(f"a request from {origin} is not the dashboard's own", 403)
    body = await request.body()
    if len(body) > MAX_BODY:
        return _error(f"the body is over {MAX_BODY} bytes", 413)
    try:
        payload = json.loads(body)
        files = DeploymentFiles(deployments_root(cluster) / check_name(request.path_params["name"]))
    except ValueError:
        return _error("the body is not valid JSON", 400)
    except UgroError as exc:
        return _error(exc.message, 404)
    if not isinstance(payload, dict) or not files.exists():
        return _error("no such deployment, or the body is not an object", 404)
    deployment, state = files.deployment(), files.state()
    if state.state != SERVING:
        return _error(f"{deployment.name} is {state.state}, not serving", 409)
    forwarded = json.dumps({**payload, "stream": True}).encode()
    try:
        connection, answer = await run_in_threadpool(
            _send, deployment, files.key(), PATHS[kind], forwarded
        )
    except OSError as exc:
        return _error(f"{deployment.name} on {deployment.node} does not answer: {exc}", 502)
    if answer.status != 200:
        text = await run_in_threadpool(answer.read)
        connection.close()
        return Response(text, status_code=answer.status, media_type="application/json")
    return StreamingResponse(_relay(connection, answer), media_type="text/event-stream")


def _send(
    deployment: Deployment, key: str | None, path: str, body: bytes
) -> tuple[http.client.HTTPConnection, Any]:
    connection = http.client.HTTPConnection(deployment.host, deployment.port, timeout=TIMEOUT_S)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    connection.request("POST", path, body=body, headers=headers)
    return connection, connection.getresponse()


def _relay(connection: http.client.HTTPConnection, answer: Any) -> Iterator[bytes]:
    """The server's events as they come (a sync iterator: Starlette reads it on a thread)."""
    try:
        while chunk := answer.read1(8192):
            yield chunk
    finally:
        connection.close()
