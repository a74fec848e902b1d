#!/usr/bin/env python3
"""The GPU check: one prepared run (at most 8 minutes on one CUDA GPU) of what only a GPU can
show, with one JSON of figures. scripts/gpu_check.sh installs what the machine lacks and runs it.

1. `ugro health --json` on the built-in cluster: the real nvidia-smi, NVML telemetry and the
   card's compute capability against torch's arch list.
2. train_production.py on a ~100M-parameter Llama built from a config, in the precision `auto`
   picks (bf16 on Ampere and newer): tokens/s and peak memory, with and without gradient
   checkpointing, packed and unpacked (the built-in conversations).
3. The balance probe's largest micro-batch, found by a real out-of-memory search.
4. bench/throughput.py on the GPU: UGRO against the plain Trainer and TRL.
5. bench/serve.py on the GPU: UGRO's own server against `generate` in a loop, and vLLM on the
   same adapter where the machine's Python has vllm.

On a machine without CUDA it runs the same steps smaller (the tiny Llama, a few steps, a
declared memory budget for the probe, the throughput bench's smoke run): CI runs it so, to keep
it working; its figures mean nothing there.

    python bench/gpu_check.py                  # everything, into bench/results/gpu_check.json
    python bench/gpu_check.py --out DIR        # gpu_check.json, gpu_check.log (every step's
                                               # output), throughput.json and serve.json into
                                               # DIR; the jobs' own files stay in a scratch
                                               # folder
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def run(argv: list[str], log: Path, *, env: dict | None = None, timeout: float = 600) -> str:
    """A step's command; its output added to `log`, an error with its tail when it fails."""
    started = time.monotonic()
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"\n$ {' '.join(argv)}\n{done.stdout}\n{done.stderr}")
    if done.returncode != 0:
        raise RuntimeError(
            f"{argv[1:3]} failed after {time.monotonic() - started:.0f} s: "
            f"{(done.stdout + done.stderr)[-1500:]}"
        )
    return done.stdout


def torch_facts() -> dict:
    import torch

    facts = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if facts["cuda"]:
        facts |= {
            "device": torch.cuda.get_device_name(),
            "capability": ".".join(map(str, torch.cuda.get_device_capability())),
            "arch_list": torch.cuda.get_arch_list(),
            "memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
        }
    return facts


def health(out: Path) -> dict:
    report = json.loads(
        run(
            [PYTHON, "-m", "ugro", "--config", "config/cluster.yaml", "health", "--json"],
            out / "gpu_check.log",
        )
    )
    return report


def train(
    out: Path, work: Path, name: str, model: str, options: list[str], env: dict | None = None
) -> dict:
    """One train_production.py run alone on this machine: its tokens/s and peak memory."""
    job = work / name
    argv = [PYTHON, "scripts/train_production.py", "--model", model, "--output-dir", str(job)]
    run([*argv, *options], out / "gpu_check.log", env=env)
    records = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in records if r.get("kind") == "train"]
    config = json.loads((job / "train_config.json").read_text())
    later = train_lines[1:] or train_lines  # the first interval holds the warm-up
    tokens = sum(r["tokens"] for r in later)
    seconds = sum(r["train_s"] for r in later)
    return {
        "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
        "peak_memory_mb": max(max(r["peak_memory_mb"]) for r in train_lines),
        "loss_first_last": [train_lines[0]["loss"], train_lines[-1]["loss"]],
        "dtype": config["dtype"],
        "attention": config["attention"],
        "gradient_checkpointing": config["gradient_checkpointing"],
        "padding": config["data"].get("padding_packed", config["data"].get("padding_unpacked")),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="a folder for gpu_check.json and the logs")
    p.add_argument("--skip-throughput", action="store_true")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ugro-gpu-check-"))
    out = Path(args.out) if args.out else work
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.log").unlink(missing_ok=True)
    facts = torch_facts()
    gpu = facts["cuda"]
    # On the GPU: a ~100M Llama, long sequences, enough steps to time. Off it: the same paths,
    # as small as they go.
    model, seq, steps, batch = (
        ("llama-100m", "1024", "30", "8") if gpu else ("tiny-llama", "256", "4", "2")
    )
    report: dict = {"machine": platform.node(), "python": platform.python_version(), **facts}
    started = time.monotonic()
    steps_s: dict[str, float] = {}

    def timed(name: str, work):
        began = time.monotonic()
        try:
            report[name] = work()
        except Exception as exc:  # one step failing still leaves the others' figures
            report[name] = {"error": str(exc)[-2000:]}
        steps_s[name] = round(time.monotonic() - began, 1)
        (out / "gpu_check.json").write_text(json.dumps(report | {"steps_s": steps_s}, indent=2))

    timed("health", lambda: health(out))
    common = ["--dataset", "builtin-chat", "--max-seq-length", seq, "--batch-size", batch,
              "--grad-accum", "1", "--max-steps", steps, "--logging-steps", str(int(steps) // 3),
              "--eval-strategy", "no", "--save-strategy", "no", "--warmup-steps", "0",
              "--lr", "1e-3", "--dtype", "auto"]  # fmt: skip
    variants = {}
    for packing in ("--packing", "--no-packing"):
        for checkpointing in ("--gradient-checkpointing", "--no-gradient-checkpointing"):
            # Off the GPU two runs take every option once: the paths, not the figures, count.
            if gpu or (packing == "--packing") == (checkpointing == "--gradient-checkpointing"):
                variants[f"{packing[2:]}_{checkpointing[2:]}"] = [*common, packing, checkpointing]
    timed(
        "training",
        lambda: {
            name: train(out, work, name, model, options) for name, options in variants.items()
        },
    )
    # The probe doubles the micro-batch up to the global batch asked (256 at most) until a step
    # runs out of memory (on the CPU: until it passes the declared budget).
    probe_env = {"UGRO_BALANCE": "auto", "UGRO_BALANCE_CACHE": str(work / "balance-cache")}
    if not gpu:
        probe_env["UGRO_MEMORY_BUDGET_GB"] = "0.045"
    asked = "256" if gpu else "16"
    probe_options = [*common[:4], "--batch-size", asked, "--grad-accum", "1", "--max-steps", "1",
                     "--eval-strategy", "no", "--save-strategy", "no", "--packing"]  # fmt: skip

    def probe() -> dict:
        job = work / "balance"
        argv = [PYTHON, "scripts/train_production.py", "--model", "llama-100m" if gpu else model]
        run([*argv, "--output-dir", str(job), *probe_options], out / "gpu_check.log", env=probe_env)
        return json.loads((job / "balance.json").read_text())

    timed("balance_probe", probe)
    if not args.skip_throughput:
        bench = [PYTHON, "bench/throughput.py", "--out", str(out / "throughput.json")]
        bench += (["--model", "llama-100m", "--max-seq-length", "1024", "--reps", "2",
                   "--steps", "30", "--batch-size", "8"] if gpu else ["--smoke"])  # fmt: skip
        timed(
            "throughput",
            lambda: (
                run(bench, out / "gpu_check.log", timeout=1800),
                json.loads((out / "throughput.json").read_text()),
            )[1],
        )
    # Serving: UGRO's own server against generate in a loop, and vLLM beside it where the
    # machine's Python has vllm (bench/serve.py); off the GPU its smoke run.
    serve = [PYTHON, "bench/serve.py", "--out", str(out / "serve.json")]
    if gpu:
        serve += ["--model", "llama-100m", "--repeats", "1"]
        serve += ["--vllm"] if importlib.util.find_spec("vllm") else []
    else:
        serve += ["--smoke"]
    timed(
        "serving",
        lambda: (
            run(serve, out / "gpu_check.log", timeout=1200),
            json.loads((out / "serve.json").read_text()),
        )[1],
    )
    report["total_s"] = round(time.monotonic() - started, 1)
    (out / "gpu_check.json").write_text(json.dumps(report | {"steps_s": steps_s}, indent=2))
    failed = [k for k, v in report.items() if isinstance(v, dict) and "error" in v]
    print(json.dumps({"out": str(out / "gpu_check.json"), "failed": failed, "steps_s": steps_s}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
