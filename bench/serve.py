#!/usr/bin/env python3
"""Serving: UGRO's own server (scripts/ugro_serve.py) against the floor, `model.generate` in a
loop in one process, on one model with one LoRA adapter, interleaved, medians of the repetitions.

  floor  base + adapter (peft) in this process; each request generated in turn, greedy
  ugro   the server on loopback; C clients (threads), each sending its requests in turn, streamed
  vllm   with --vllm, where vllm is installed (a CUDA GPU): vLLM's server, same adapter

Every request asks for exactly --tokens tokens (`ignore_eos`, vLLM's extension, which UGRO's
server honours too; the floor passes min_new_tokens), so tokens/s compare like with like.
Figures at each concurrency: time to first token (median; the floor's is a one-token generate)
and total tokens/s. Targets (docs/PERFORMANCE.md): the server's own cost at concurrency 1 under
10% of the floor's tokens/s; more total tokens/s than the floor at 4 and 16 (concurrent requests
share forward passes).

    python bench/serve.py                      # llama-20m, concurrency 1, 4, 16; 3 repetitions
    python bench/serve.py --smoke              # tiny-llama, one short repetition (CI)
    python bench/serve.py --model llama-100m --vllm   # on a GPU
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(os.environ.get("UGRO_BENCH_DIR") or REPO / "bench" / "results")
sys.path.insert(0, str(REPO / "scripts"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_models(name: str, root: Path) -> tuple[Path, Path]:
    """An offline base and a LoRA adapter with random weights (a fresh one's B is zero)."""
    import torch
    from trainlib import models

    tokenizer = models.byte_tokenizer()
    base = models.offline_llama(tokenizer, seed=0, name=name)
    base.save_pretrained(str(root / "base"))
    tokenizer.save_pretrained(str(root / "base"))
    lora = models.add_lora(
        models.offline_llama(tokenizer, seed=0, name=name),
        rank=16, alpha=32, dropout=0.0, targets=["q_proj", "v_proj"], bias="none",
    )  # fmt: skip
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, parameter in lora.named_parameters():
            if "lora_B" in key:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    lora.save_pretrained(str(root / "adapter"))
    tokenizer.save_pretrained(str(root / "adapter"))
    return root / "base", root / "adapter"


def prompts(count: int) -> list[str]:
    """Chat prompts of varying length (the built-in conversations' first turns, templated)."""
    from trainlib import conversations, models

    tokenizer = models.byte_tokenizer()
    chats = conversations.builtin_conversations(count=count, seed=3)
    return [
        tokenizer.apply_chat_template(c[:1], add_generation_prompt=True, tokenize=False)
        for c in chats
    ]


# --- the floor ----------------------------------------------------------------------------------
class Floor:
    def __init__(self, base: Path, adapter: Path) -> None:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(adapter)
        model = AutoModelForCausalLM.from_pretrained(base)
        self.model = PeftModel.from_pretrained(model, adapter).eval()
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)

    def generate(self, prompt: str, tokens: int) -> int:
        ids = self.tokenizer(prompt, return_tensors="pt").to(self.device)
        with self.torch.no_grad():
            out = self.model.generate(
                **ids,
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        return int(out.shape[1] - ids["input_ids"].shape[1])

    def measure(self, texts: list[str], tokens: int) -> dict:
        firsts = []
        for text in texts[:4]:
            started = time.perf_counter()
            self.generate(text, 1)
            firsts.append(time.perf_counter() - started)
        started = time.perf_counter()
        produced = sum(self.generate(text, tokens) for text in texts)
        seconds = time.perf_counter() - started
        return {"ttft_ms": statistics.median(firsts) * 1000, "tokens_per_s": produced / seconds}


# --- a server -----------------------------------------------------------------------------------
def start_ugro(base: Path, adapter: Path, root: Path, port: int) -> subprocess.Popen:
    spec = {
        "name": "bench",
        "base_id": "base",
        "base_path": str(base),
        "adapters": [{"model_id": "tuned", "path": str(adapter)}],
        "host": "127.0.0.1",
        "port": port,
        "key_file": None,
        "max_tokens_cap": 4096,
        "max_per_client": 64,
        "max_batch": 16,
    }
    (root / "spec.json").write_text(json.dumps(spec))
    log = open(root / "server.log", "wb")  # noqa: SIM115 - the server's, for its life
    return subprocess.Popen(
        [
            sys.executable,
            str(REPO / "scripts" / "ugro_serve.py"),
            "--spec",
            str(root / "spec.json"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def start_vllm(base: Path, adapter: Path, root: Path, port: int) -> subprocess.Popen:
    sys.path.insert(0, str(REPO))
    from ugro.serve.engines import NodeFacts, vllm_arguments

    arguments = vllm_arguments(
        base=str(base), adapters=[("tuned", str(adapter))], max_rank=16,
        host="127.0.0.1", port=port, facts=NodeFacts(cuda=True, vllm=True),
    )  # fmt: skip
    log = open(root / "vllm.log", "wb")  # noqa: SIM115 - the server's, for its life
    return subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *arguments],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_ready(port: int, process: subprocess.Popen, timeout: float = 600) -> None:
    """Until /v1/models answers (vLLM's /health answers before it can serve)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited ({process.returncode}) before it served")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/v1/models")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"no server on port {port} after {timeout:.0f}s")


def one_request(port: int, prompt: str, tokens: int) -> tuple[float, int]:
    """(seconds to the first token, tokens received) of one streamed completion."""
    body = {
        "model": "tuned",
        "prompt": prompt,
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    connection.request(
        "POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"}
    )
    answer = connection.getresponse()
    if answer.status != 200:
        raise SystemExit(f"the server answered {answer.status}: {answer.read()[:300]!r}")
    first, produced = None, 0
    for line in answer:
        if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if chunk.get("choices") and chunk["choices"][0].get("text") and first is None:
            first = time.perf_counter() - started
        if chunk.get("usage"):
            produced = chunk["usage"]["completion_tokens"]
    connection.close()
    return (first if first is not None else time.perf_counter() - started), produced


def measure_server(port: int, texts: list[str], tokens: int, clients: int) -> dict:
    firsts: list[float] = []
    produced = [0]
    lock = threading.Lock()
    queue = list(texts)

    def client() -> None:
        while True:
            with lock:
                if not queue:
                    return
                text = queue.pop()
            first, count = one_request(port, text, tokens)
            with lock:
                firsts.append(first)
                produced[0] += count

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    return {"ttft_ms": statistics.median(firsts) * 1000, "tokens_per_s": produced[0] / seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama-20m", help="an offline model (trainlib.models)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per answer")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--vllm", action="store_true", help="also vLLM (a CUDA GPU with vllm)")
    parser.add_argument("--smoke", action="store_true", help="tiny-llama, one short repetition")
    parser.add_argument("--out", type=Path, help="where the JSON goes")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.tokens, args.repeats, args.concurrency = "tiny-llama", 8, 1, "1,4"
    levels = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory(prefix="ugro-bench-serve-") as scratch:
        root = Path(scratch)
        base, adapter = make_models(args.model, root)
        texts = prompts(32 if not args.smoke else 8)
        floor = Floor(base, adapter)
        servers = {"ugro": start_ugro}
        if args.vllm:
            servers["vllm"] = start_vllm
        running = {}
        try:
            for name, start in servers.items():
                port = free_port()
                running[name] = (port, start(base, adapter, root, port))
                wait_ready(port, running[name][1])
            samples: dict[str, dict[int, list[dict]]] = {"floor": {0: []}}
            for name in servers:
                samples[name] = {c: [] for c in levels}
            for repeat in range(args.repeats):
                samples["floor"][0].append(floor.measure(texts, args.tokens))
                for name, (port, _) in running.items():
                    for clients in levels:
                        samples[name][clients].append(
                            measure_server(port, texts, args.tokens, clients)
                        )
                print(f"repetition {repeat + 1} of {args.repeats} done", file=sys.stderr)
        finally:
            for _, process in running.values():
                process.terminate()
                process.wait(timeout=30)
    report = summarise(samples, args, levels)
    out = args.out or RESULTS / ("serve-smoke.json" if args.smoke else "serve.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["ratios"], indent=2))
    print(f"written to {out}", file=sys.stderr)
    return 0


def summarise(samples: dict, args: argparse.Namespace, levels: list[int]) -> dict:
    def median(runs: list[dict], key: str) -> float:
        return round(statistics.median(r[key] for r in runs), 2)

    floor = {k: median(samples["floor"][0], k) for k in ("ttft_ms", "tokens_per_s")}
    report: dict = {
        "model": args.model,
        "tokens": args.tokens,
        "repeats": args.repeats,
        "device": "cuda" if floor_device() == "cuda" else "cpu",
        "floor": floor,
        "ratios": {},
    }
    for name in (n for n in samples if n != "floor"):
        report[name] = {
            str(c): {k: median(samples[name][c], k) for k in ("ttft_ms", "tokens_per_s")}
            for c in levels
        }
        for c in levels:
            ratio = report[name][str(c)]["tokens_per_s"] / floor["tokens_per_s"]
            report["ratios"][f"{name}_over_floor_tokens_per_s_at_{c}"] = round(ratio, 3)
        if 1 in levels:
            cost = 1 - report[name]["1"]["tokens_per_s"] / floor["tokens_per_s"]
            report["ratios"][f"{name}_own_cost_at_1"] = round(cost, 3)
    return report


def floor_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    sys.exit(main())
