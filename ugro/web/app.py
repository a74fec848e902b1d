"""The dashboard: a read-only Starlette app serving a JSON API (ugro.views, the CLI's --json
shapes) and one static page that draws it with uPlot, shipped in the wheel.

Who may ask: on loopback, anyone on this machine (as with the project's files); anywhere else
only holders of the token (`Authorization: Bearer <token>`, or a cookie set by opening
`/?token=<token>` once, which then redirects to a URL without it). Requests naming any other
host are refused, so a web page cannot reach the API by rebinding a name to 127.0.0.1. Every route
is a GET but the serving page's prompt box (ugro.web.try_it, a POST with its own checks); every
JSON response passes through a filter that blanks the secrets this process knows.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from ugro import views
from ugro.core.cluster import Cluster
from ugro.core.errors import UgroError
from ugro.records.history import Jobs
from ugro.results.compare import compare as compare_jobs
from ugro.results.summary import find_jobs, job_results
from ugro.web.try_it import try_deployment

STATIC = Path(__file__).parent / "static"
COOKIE = "ugro_dashboard"
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "UGRO_DASHBOARD_TOKEN")
# No inline script or style, nothing from elsewhere: what the page runs is what the wheel ships.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class SecretFreeJSON(JSONResponse):
    """JSON with every secret this process knows replaced, wherever it appears."""

    secrets: tuple[str, ...] = ()

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, default=str, sort_keys=True)
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return text.encode("utf-8")


class TokenGate:
    """ASGI middleware: every request carries the token, else 401 (nothing to gate: pass)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.token:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        offered = request.query_params.get("token")
        response: Any
        if request.url.path == "/favicon.ico":
            # No icon, and no second 401 in the console of a refused page (browsers ask for
            # one after any page): nothing of the cluster is in an empty answer.
            response = Response(status_code=204)
        elif offered is not None and request.url.path == "/" and self._valid(offered):
            # Once: into an HttpOnly cookie, and off the URL (history, screenshots, referrers).
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
        elif self._valid(self._presented(request)):
            await self.app(scope, receive, send)
            return
        elif request.url.path.startswith("/api/"):
            response = JSONResponse({"error": "a token is required"}, status_code=401)
        else:
            response = PlainTextResponse(
                "A token is required: open the address `ugro dashboard` printed.", 401
            )
        await response(scope, receive, send)

    @staticmethod
    def _presented(request: Request) -> str:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            return header[7:].strip()
        return request.cookies.get(COOKIE, "")

    def _valid(self, offered: str) -> bool:
        return bool(offered) and hmac.compare_digest(offered.encode(), str(self.token).encode())


class Headers:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [
                    (k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(cluster: Cluster, *, host: str = "127.0.0.1", token: str | None = None) -> Starlette:
    secrets = tuple(s for s in (os.environ.get(k) for k in SECRET_ENV) if s and len(s) >= 6)
    Json = type("Json", (SecretFreeJSON,), {"secrets": secrets + ((token,) if token else ())})
    jobs = Jobs(cluster)

    def answer(build: Any) -> Any:
        async def endpoint(request: Request) -> Any:
            try:
                return Json(build(request))
            except UgroError as exc:
                return Json({"error": exc.message}, status_code=404)

        return endpoint

    def directory(request: Request) -> Path:
        return jobs.experiment_dir(jobs.find(request.path_params["job"]).job_id)

    def cluster_info(_: Request) -> dict[str, Any]:
        return {
            "cluster": cluster.name,
            "description": cluster.description,
            "nodes": [
                {
                    "name": node.name,
                    "rank": node.rank,
                    "role": node.role,
                    "address": node.address,
                    "hardware": dict(node.hardware),
                }
                for node in cluster.nodes
            ],
            "health": views.health_view(cluster),
        }

    def results(request: Request) -> dict[str, Any]:
        return job_results(jobs, jobs.find(request.path_params["job"]))

    def compare(request: Request) -> dict[str, Any]:
        names = [n for n in request.query_params.get("jobs", "").split(",") if n]
        return compare_jobs(jobs, find_jobs(jobs, names))

    def since(request: Request) -> int:
        try:
            return max(0, int(request.query_params.get("since", "0")))
        except ValueError:
            return 0

    async def try_it(request: Request) -> Any:
        return await try_deployment(cluster, request)

    routes = [
        Route("/", lambda _: FileResponse(STATIC / "index.html")),
        Route("/api/cluster", answer(cluster_info)),
        Route("/api/health/history", answer(lambda r: views.health_history_view(cluster))),
        Route("/api/jobs", answer(lambda r: views.jobs_view(cluster, recent=200))),
        Route("/api/queue", answer(lambda r: views.queue_view(cluster))),
        Route("/api/compare", answer(compare)),
        Route("/api/jobs/{job}/results", answer(results)),
        Route(
            "/api/jobs/{job}/curves",
            answer(lambda r: views.curves_view(directory(r), since=since(r))),
        ),
        Route("/api/jobs/{job}/telemetry", answer(lambda r: views.telemetry_view(directory(r)))),
        Route("/api/jobs/{job}/logs", answer(lambda r: views.logs_view(directory(r)))),
        Route("/api/deployments", answer(lambda r: views.deployments_view(cluster))),
        Route("/api/deployments/{name}/{kind}", try_it, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    hosts = ["127.0.0.1", "localhost", "[::1]", "::1"]
    if not is_loopback(host):
        hosts = ["*"] if host in ("0.0.0.0", "::") else [*hosts, host]  # noqa: S104
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(Headers),
            Middleware(TrustedHostMiddleware, allowed_hosts=hosts),
            Middleware(TokenGate, token=token),
        ],
    )
