"""The dashboard's server, for real (uvicorn on a loopback port, asked over HTTP): the API
answers in the CLI's --json shapes, the token is enforced, other hosts and methods are refused,
and no secret reaches a response. The page itself is tested in a browser
(tests/integration/test_dashboard.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ugro.records.history import Jobs
from ugro.web.app import is_loopback
from ugro.web.serve import Listener, choose_token, serve_in_thread


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET"):
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


@pytest.fixture
def served(cluster, monkeypatch):
    """A dashboard on a free loopback port; `start(token)` starts it."""
    servers = []

    def start(token: str | None = None) -> str:
        port = free_port()
        server = serve_in_thread(cluster, Listener("127.0.0.1", port, token))
        assert server is not None
        servers.append(server)
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.should_exit = True


def test_the_api_answers_in_the_clis_shapes(cluster, served) -> None:
    jobs = Jobs(cluster)
    directory = jobs.create("exp1_20260101_000000")
    jobs.record("exp1_20260101_000000", "launching", nodes=["m"])
    (directory / "metrics.jsonl").write_text(
        json.dumps({"kind": "train", "step": 2, "loss": 3.0, "train_s": 1, "tokens": 10}) + "\n"
    )
    base = served()
    status, headers, body = get(f"{base}/api/queue")
    assert status == 200 and "default-src 'self'" in headers["content-security-policy"]
    cli = subprocess.run(
        [sys.executable, "-m", "ugro", "--config", str(cluster.source), "queue", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(body) == json.loads(cli.stdout)
    assert [j["job_id"] for j in json.loads(get(f"{base}/api/jobs")[2])] == ["exp1_20260101_000000"]
    curves = json.loads(get(f"{base}/api/jobs/exp1/curves?since=0")[2])
    assert [p["step"] for p in curves["train"]] == [2]
    assert json.loads(get(f"{base}/api/jobs/exp1/curves?since=2")[2])["train"] == []
    results = json.loads(get(f"{base}/api/jobs/exp1/results")[2])
    assert results["steps"] == 2 and results["status"] == "launching"
    status, _, body = get(f"{base}/api/jobs/..%2Fetc/results")
    assert status == 404
    status, _, body = get(f"{base}/api/jobs/nosuch/results")
    assert status == 404 and "no job named 'nosuch'" in json.loads(body)["error"]
    # Read-only, and only for this machine's names.
    assert get(f"{base}/api/jobs", method="POST")[0] == 405
    assert get(f"{base}/api/jobs", headers={"Host": "evil.example"})[0] == 400
    # The page and its assets come from the wheel, not from the internet.
    status, _, page = get(f"{base}/")
    assert status == 200 and "/static/vendor/uPlot.iife.min.js" in page and "http" not in page
    assert get(f"{base}/static/app.js")[0] == 200


def test_a_token_is_required_when_set(cluster, served) -> None:
    base = served(token="t0ken-for-tests")
    assert get(f"{base}/api/jobs")[0] == 401
    assert get(f"{base}/")[0] == 401
    assert get(f"{base}/api/jobs", {"Authorization": "Bearer wrong"})[0] == 401
    status, _, body = get(f"{base}/favicon.ico")  # what a browser asks for on the 401 page
    assert (status, body) == (204, "")
    assert get(f"{base}/api/jobs", {"Authorization": "Bearer t0ken-for-tests"})[0] == 200
    status, headers, _ = get(f"{base}/?token=t0ken-for-tests")
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"].split(";")[0]
    assert "HttpOnly" in headers["set-cookie"]
    assert get(f"{base}/api/jobs", {"Cookie": cookie})[0] == 200


def test_no_secret_reaches_a_response(cluster, served, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_canary_value_123")
    jobs = Jobs(cluster)
    jobs.create("leak_20260101_000000")
    jobs.record("leak_20260101_000000", "launching", reason="pasted hf_canary_value_123 here")
    base = served()
    for path in ("/api/jobs", "/api/jobs/leak/results"):
        status, _, body = get(base + path)
        assert status == 200 and "hf_canary_value_123" not in body and "[redacted]" in body


def test_who_needs_a_token() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")
    os.environ.pop("UGRO_DASHBOARD_TOKEN", None)
    assert choose_token("127.0.0.1") is None
    made = choose_token("0.0.0.0")
    assert made and len(made) >= 24 and made != choose_token("0.0.0.0")


def test_the_command_prints_its_address_and_refuses_a_port_in_use(cluster, tmp_path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "UGRO_DASHBOARD_TOKEN"}
    command = [sys.executable, "-m", "ugro", "--config", str(cluster.source), "dashboard"]
    first = subprocess.Popen(
        [*command, "--host", "0.0.0.0", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert first.stdout is not None
        line = first.stdout.readline()
        assert f"http://127.0.0.1:{port}/?token=" in line, line
        token = line.rsplit("token=", 1)[1].strip()
        deadline = time.monotonic() + 15
        status = 0
        while status != 401 and time.monotonic() < deadline:
            try:
                status = get(f"http://127.0.0.1:{port}/api/jobs")[0]
            except OSError:
                time.sleep(0.1)
        assert status == 401  # not loopback: the token it printed is needed
        headers = {"Authorization": f"Bearer {token}"}
        assert get(f"http://127.0.0.1:{port}/api/jobs", headers)[0] == 200
        second = subprocess.run(
            [*command, "--port", str(port)], capture_output=True, text=True, env=env, check=False
        )
        assert second.returncode == 2
        assert (
            second.stderr.strip()
            == f"ugro: port {port} on 127.0.0.1 is in use; --port picks another"
        )
    finally:
        first.terminate()
        first.wait(timeout=10)
    assert not Path(tmp_path / "data").exists()
