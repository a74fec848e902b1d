"""`ugro serve` on the sandbox (real sshd nodes): two jobs' adapters served from gpu1, asked from
the master with OpenAI's own client, the server killed and restarted, gpu1 partitioned and lost,
a launch refused on the node that serves, then torn down with nothing left.

One deployment goes through all of it, in order: each step costs seconds and reuses the last.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from pathlib import Path

import pytest

from tests.conftest import run_ugro
from tests.integration.conftest import TOKEN, shot
from tests.integration.jobkit import wait_for
from ugro.config import load_cluster_file
from ugro.core import processes
from ugro.records.deployments import DeploymentFiles, all_deployments, deployments_root
from ugro.records.history import Jobs
from ugro.sandbox import faults

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

PORT = 8311
PROMPT = "The quick brown fox"
DEPLOYMENT_PROCESSES = """
import os, sys
found = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            if b"UGRO_DEPLOYMENT=" + sys.argv[1].encode() in handle.read().split(b"\\0"):
                found.append(int(pid))
    except OSError:
        pass
print(found)
"""


def node_python(sandbox, node: str, program: str, *args: str) -> str:
    from tests.integration.conftest import ssh_as

    done = ssh_as(sandbox, sandbox.node(node), "python3", "-c", program, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def local_greedy(trainlib, job_dir: Path | None, base_dir: Path, prompt: str, tokens: int) -> str:
    """The answer base (+ adapter) gives here, with transformers' own generate."""
    import torch

    auto = trainlib.transformers.AutoModelForCausalLM
    model = auto.from_pretrained(base_dir)
    source = base_dir
    if job_dir is not None:
        source = job_dir / "artifacts" / "adapter"
        model = trainlib.peft.PeftModel.from_pretrained(model, source)
    tokenizer = trainlib.transformers.AutoTokenizer.from_pretrained(source)
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.eval().generate(
            **ids, max_new_tokens=tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def streams_at_once(host: str, key: str, count: int) -> list[tuple[int, str | None]]:
    """`count` streaming requests from one client at once: each one's status and Retry-After."""
    results: list[tuple[int, str | None]] = []
    lock = threading.Lock()
    body = json.dumps(
        {"model": "tiny-llama", "prompt": PROMPT, "max_tokens": 48, "stream": True}
    ).encode()
    barrier = threading.Barrier(count)

    def one() -> None:
        connection = http.client.HTTPConnection(host, PORT, timeout=120)
        barrier.wait()
        connection.request(
            "POST",
            "/v1/completions",
            body=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        answer = connection.getresponse()
        answer.read()
        with lock:
            results.append((answer.status, answer.getheader("Retry-After")))
        connection.close()

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    return results


def test_serve_two_adapters_from_gpu1_through_faults(
    sandbox, reference_run, trainlib, dashboard, browser
) -> None:
    from openai import APIConnectionError, AuthenticationError, OpenAI

    env = {"UGRO_CONFIG": str(sandbox.cluster_file)}
    cluster = load_cluster_file(sandbox.cluster_file)
    jobs = Jobs(cluster)
    # A second job on the same base (the tiny Llama, the same seed), trained on the master only.
    second = run_ugro(
        "launch", "--name", "second", "--nodes", "gpu-master", "--",
        "--max-steps", "6", "--lr", "5e-2", "--save-strategy", "no", "--eval-strategy", "no",
        env=env, timeout=600,
    )  # fmt: skip
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]

    # Bad input first: each one line, exit 2, nothing started.
    before = {f.name: f.state() for f in all_deployments(cluster)}
    for args, expected in (
        (["nosuch"], "no job named 'nosuch'"),
        (["reference", "--engine", "vllm", "--node", "gpu1"], "gpu1 has no CUDA GPU"),
        (["reference", "--node", "gpu9"], "no node named 'gpu9'"),
    ):
        refused = run_ugro("serve", "up", *args, env=env)
        assert refused.returncode == 2, refused.stderr
        assert expected in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert {f.name: f.state() for f in all_deployments(cluster)} == before

    up = run_ugro(
        "serve", "up", "reference", "second", "--name", "both", "--node", "gpu1",
        "--port", str(PORT), env=env, timeout=300,
    )  # fmt: skip
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    key = re.search(r"key \(shown once; kept 0600 in .*\): (\S+)", up.stdout).group(1)
    files = DeploymentFiles(deployments_root(cluster) / "both")
    deployment = files.deployment()
    assert deployment.node == "gpu1" and deployment.host == sandbox.node("gpu1").address
    assert oct(files.key_path.stat().st_mode & 0o777) == "0o600"
    client = OpenAI(base_url=deployment.url, api_key=key, max_retries=0)

    # What it serves, and that each adapter answers as its own job's model does here.
    assert [m.id for m in client.models.list()] == ["tiny-llama", "reference", "second"]
    out = {name: jobs.experiment_dir(jobs.find(name).job_id) for name in ("reference", "second")}
    base_dir = out["reference"] / "artifacts" / "base_model"
    answers = {}
    for model in ("tiny-llama", "reference", "second"):
        answers[model] = (
            client.completions.create(model=model, prompt=PROMPT, max_tokens=12, temperature=0)
            .choices[0]
            .text
        )
        here = local_greedy(trainlib, out.get(model), base_dir, PROMPT, 12)
        assert answers[model] == here, model
    assert answers["reference"] != answers["tiny-llama"]
    assert answers["second"] != answers["tiny-llama"]

    chat = [{"role": "user", "content": "hello there"}]
    whole = client.chat.completions.create(
        model="reference", messages=chat, max_tokens=16, temperature=0
    )
    assert whole.usage.completion_tokens > 0 and whole.choices[0].finish_reason
    streamed = client.chat.completions.create(
        model="reference", messages=chat, max_tokens=16, temperature=0, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == whole.choices[0].message.content

    with pytest.raises(AuthenticationError):
        OpenAI(base_url=deployment.url, api_key="wrong-key", max_retries=0).models.list()

    # Sixteen streams from one client at once: the excess is turned away, and it goes on serving.
    results = streams_at_once(deployment.host, key, 16)
    statuses = sorted(status for status, _ in results)
    assert statuses.count(200) >= 1 and set(statuses) <= {200, 429, 503}, statuses
    assert any(status in (429, 503) for status in statuses), statuses
    assert all(after for status, after in results if status != 200)
    assert client.completions.create(model="second", prompt="x", max_tokens=2).choices

    def status_row() -> dict:
        rows = json.loads(run_ugro("serve", "status", "--json", env=env).stdout)
        return next(r for r in rows if r["name"] == "both")

    # The figures arrive with the heartbeat, within a second or two.
    row = wait_for(lambda: (r := status_row())["requests"] >= 6 and r, 10, "the figures")
    assert row["state"] == "serving" and row["engine"] == "transformers"
    assert row["latency_p99_ms"] >= row["latency_p50_ms"] > 0 and row["tokens_per_s"] > 0

    # The dashboard's serving page: the prompt box's answer streams in, the key stays out.
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        page.goto(f"{dashboard}/?token={TOKEN}")
        page.goto(f"{dashboard}/#/serving")
        box = page.locator('[data-deployment="both"]')
        box.wait_for(timeout=30_000)
        box.locator('select[aria-label="model"]').select_option("reference")
        box.locator('select[aria-label="kind"]').select_option("completions")
        box.locator('textarea[aria-label="prompt"]').fill(PROMPT)
        box.locator('input[aria-label="max tokens"]').fill("12")
        box.locator("button").click()
        box.locator("text=/^done \\(/").wait_for(timeout=60_000)
        assert box.locator("pre").text_content() == answers["reference"]
        assert key not in page.content()
        shot(page, "serving")
        assert problems == [], problems
    finally:
        page.close()

    # A launch on the node that serves is refused, naming the deployment.
    refused = run_ugro(
        "launch", "--name", "onserving", "--nodes", "gpu1", "--", "--max-steps", "1", env=env
    )
    assert refused.returncode != 0
    assert "gpu1 serves both: `ugro serve down both` ends it" in refused.stderr
    # A second server on the same port of gpu1: refused by the node, nothing left behind.
    taken = run_ugro(
        "serve", "up", "second", "--name", "again", "--node", "gpu1", "--force",
        "--port", str(PORT), env=env,
    )  # fmt: skip
    assert taken.returncode == 2 and f"port {PORT} on" in taken.stderr, taken.stderr
    assert not (deployments_root(cluster) / "again").exists()

    # The server killed: its controller starts it again.
    pids = json.loads(node_python(sandbox, "gpu1", DEPLOYMENT_PROCESSES, "both"))
    assert pids
    node_python(sandbox, "gpu1", "import os, sys; os.kill(int(sys.argv[1]), 9)", str(pids[0]))
    wait_for(lambda: files.state().state == "restarting", 15, "restarting after a kill")
    wait_for(lambda: files.state().state == "serving", 90, "serving again")
    assert files.state().restarts == 1
    assert client.completions.create(model="reference", prompt="x", max_tokens=2).choices

    # gpu1 partitioned: lost within 15 s; healed: serving again.
    faults.fault(sandbox.name, "gpu1", "partition")
    try:
        wait_for(lambda: files.state().state == "lost", 15, "lost after a partition")
    finally:
        faults.fault(sandbox.name, "gpu1", "heal")
    wait_for(lambda: files.state().state == "serving", 45, "serving after the heal")

    # Its controller killed: the next look (`ugro serve status`, `ugro status`, the daemon)
    # starts another, which picks the deployment up as it is.
    controllers = processes.find(
        lambda pid: f"ugro.serve\0{files.dir}".encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    )
    assert len(controllers) == 1
    processes.end(controllers)
    revived = run_ugro("serve", "status", env=env)
    assert "both: its controller had stopped; started it again." in revived.stderr
    wait_for(files.alive, 10, "a new controller")
    overall = json.loads(run_ugro("status", "--json", env=env).stdout)
    assert [d["name"] for d in overall["deployments"]] == ["both"]
    assert overall["deployments"][0]["state"] == "serving"

    # The key went nowhere it should not.
    for path in (files.log_path, *cluster.paths.runs.rglob("*")):
        if path.is_file():
            assert key not in path.read_text(errors="replace"), path
    assert key not in run_ugro("serve", "status", env=env).stdout
    logs = run_ugro("serve", "logs", "both", "--lines", "500", env=env)
    assert logs.returncode == 0 and "Uvicorn running" in logs.stdout and key not in logs.stdout

    down = run_ugro("serve", "down", "both", env=env, timeout=120)
    assert down.returncode == 0 and "nothing left on gpu1" in down.stdout, down.stdout + down.stderr
    assert json.loads(node_python(sandbox, "gpu1", DEPLOYMENT_PROCESSES, "both")) == []
    with pytest.raises(APIConnectionError):
        client.models.list()
