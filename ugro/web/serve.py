"""Serving the dashboard: in the foreground (`ugro dashboard`) or on a thread of the daemon.

The token: UGRO_DASHBOARD_TOKEN when set (then required on loopback too); else, for an address
other than loopback, one generated here, which the caller prints once. On loopback with no
token set, none is needed; on a machine other people log into, set UGRO_DASHBOARD_TOKEN, since
they can reach 127.0.0.1 too.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import socket
import threading
from dataclasses import dataclass
from typing import Any

from ugro.core.cluster import Cluster
from ugro.core.errors import UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listener:
    host: str
    port: int
    token: str | None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "[::]") else host  # noqa: S104
        return f"http://{shown}:{self.port}/" + (f"?token={self.token}" if self.token else "")


def choose_token(host: str) -> str | None:
    # starlette's app only where a dashboard is served: `ugro daemon status` reads this module.
    from ugro.web.app import is_loopback

    given = os.environ.get("UGRO_DASHBOARD_TOKEN")
    if given:
        return given
    return None if is_loopback(host) else secrets.token_urlsafe(24)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now, so that a port in use is one clear line, not a log
    of uvicorn's."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} on {host} is in use; --port picks another") from None
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    sock.listen(128)
    return sock


def server(cluster: Cluster, listener: Listener) -> Any:
    # The web stack (uvicorn, starlette) is loaded only to serve.
    import uvicorn

    from ugro.web.app import create_app

    app = create_app(cluster, host=listener.host, token=listener.token)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    return uvicorn.Server(config)


def serve_in_thread(cluster: Cluster, listener: Listener) -> Any | None:
    """The daemon's dashboard: started on a thread (uvicorn installs no signal handlers off
    the main thread); a port in use is logged, not fatal: the daemon's work matters more."""
    try:
        sock = bind(listener.host, listener.port)
    except UsageError as exc:
        log.warning("dashboard not served: %s", exc.message)
        return None
    instance = server(cluster, listener)
    threading.Thread(
        target=instance.run, kwargs={"sockets": [sock]}, name="dashboard", daemon=True
    ).start()
    log.info("dashboard at %s", listener.url.split("?")[0])
    return instance
