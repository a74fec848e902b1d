#!/usr/bin/env python3
"""Training throughput: UGRO's launch of train_production.py against the same training without
UGRO, tokens per second per rank, interleaved.

Contenders, all on one model (an offline Llama saved to a directory), one prompt/completion data
set (the built-in conversations), one batch size, LoRA settings, precision, optimizer and number
of steps, each with the loss on completions only and batches padded to their longest example:
  ugro         `ugro launch` of scripts/train_production.py (its per-rank clocks, the gathers at
               each log step, the heartbeat and the job's controller all running)
  plain        bench/contenders/plain_trainer.py: the HF Trainer under plain torchrun, written
               for the bench with nothing of UGRO's (the floor)
  trl          bench/contenders/trl_sft.py: TRL's SFTTrainer under plain torchrun (the anchor;
               left out, and said so, where trl is not installed)
  ugro_packed  UGRO with --packing: what packing saves on variable-length data, as tokens/s
Every contender reports the same measurement: non-padding input tokens between its first and
last log step over the seconds between them (bench/contenders/token_clock.py; UGRO's own
metrics.jsonl for UGRO), so the ratios compare like with like.

On the built-in cluster (this machine) the contenders run one after another; on a sandbox
(`--sandbox NAME`, its 3 nodes) `plain` and `trl` run the UGRO job's own torchrun commands by
hand over ssh, with their script in place of UGRO's (trl where the nodes' environment has it).

    python bench/throughput.py                          # the built-in cluster, 3 repetitions
    python bench/throughput.py --sandbox ugro           # a sandbox's 3 nodes
    python bench/throughput.py --model llama-100m --max-seq-length 1024   # on a GPU
    python bench/throughput.py --smoke                  # one short repetition, unpacked (CI)
    python bench/throughput.py --memory --batch-size 8 --max-seq-length 512   # checkpointing
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CONTENDERS = REPO / "bench" / "contenders"
RESULTS = Path(os.environ.get("UGRO_BENCH_DIR") or REPO / "bench" / "results")
UGRO = [sys.executable, "-m", "ugro"]
STAGE = "ugro-bench"  # in each node's home on a sandbox
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))


def device_settings(gradient_checkpointing: bool) -> dict:
    """What every contender trains with on this machine's device (as trainlib.speed decides)."""
    from trainlib import speed

    device = speed.this_device()
    chosen = speed.choose(
        device,
        dtype="auto",
        gradient_checkpointing=gradient_checkpointing,
        tf32=None,
        attention="sdpa",
        optim="auto",
        dataloader_workers=None,
        hub_model=True,
    )
    return {
        "device": device.name,
        "dtype": chosen.dtype,
        "optim": chosen.optim,
        "workers": chosen.dataloader_workers,
        "gradient_checkpointing": chosen.gradient_checkpointing,
    }


def stage(folder: Path, model_name: str, conversations: int) -> None:
    """The model saved to folder/model, the conversations as prompt/completion JSONL in
    folder/data.jsonl, and the contenders' scripts in folder/contenders."""
    from trainlib import conversations as chats
    from trainlib import models

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = models.byte_tokenizer()
    models.offline_llama(tokenizer, seed=0, name=model_name).save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    with open(folder / "data.jsonl", "w", encoding="utf-8") as handle:
        for turns in chats.builtin_conversations(count=conversations):
            last = max(i for i, t in enumerate(turns) if t["role"] == "assistant")
            prompt = tokenizer.apply_chat_template(
                turns[:last], tokenize=False, add_generation_prompt=True
            )
            handle.write(json.dumps({"prompt": prompt, "completion": turns[last]["content"]}))
            handle.write("\n")
    (folder / "contenders").mkdir(exist_ok=True)
    for script in CONTENDERS.glob("*.py"):
        (folder / "contenders" / script.name).write_text(script.read_text())


def tokens_per_second(marks: list[list[float]], world: int) -> float:
    """Per rank, between the first and the last log step ([step, seconds, tokens so far])."""
    (_, t0, k0), (_, t1, k1) = marks[0], marks[-1]
    return (k1 - k0) / max(t1 - t0, 1e-9) / world


class Bench:
    def __init__(self, args: argparse.Namespace, device: dict, config: Path, root: str) -> None:
        self.args, self.device, self.config, self.root = args, device, config, root
        self.runs = 0

    def shared(self) -> list[str]:
        """The options every contender takes alike (root: where the staged files are)."""
        a, d = self.args, self.device
        return [
            "--model", f"{self.root}/model", "--max-seq-length", str(a.max_seq_length),
            "--batch-size", str(a.batch_size), "--max-steps", str(a.steps),
            "--logging-steps", str(a.logging_steps), "--lora-rank", "16", "--lr", "1e-3",
            "--dtype", d["dtype"], "--optim", d["optim"],
        ]  # fmt: skip

    def ugro(self, *, packing: bool) -> tuple[float, dict]:
        self.runs += 1
        argv = [*UGRO, "--config", str(self.config), "launch", "--name", f"tp{self.runs}", "--"]
        argv += [*self.shared(), "--dataset", f"{self.root}/data.jsonl"]
        argv += [
            "--grad-accum", "1", "--warmup-steps", "0", "--eval-strategy", "no",
            "--save-strategy", "no", "--lora-alpha", "32", "--target-modules", "q_proj,v_proj",
            "--attention", "sdpa", "--dataloader-workers", str(self.device["workers"]),
            "--packing" if packing else "--no-packing",
            "--gradient-checkpointing" if self.device["gradient_checkpointing"]
            else "--no-gradient-checkpointing",
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=3600, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"ugro launch failed: {done.stdout[-1500:]}{done.stderr[-1500:]}")
        job_id = done.stdout.split("Launched ", 1)[1].split(" ", 1)[0]
        job_dir = experiments(self.config) / job_id
        train = [
            r
            for r in map(json.loads, (job_dir / "metrics.jsonl").read_text().splitlines())
            if r.get("kind") == "train"
        ]
        marks, total = [], 0
        for record in train:
            total += record["tokens"]
            marks.append([record["step"], record["elapsed_s"], total])
        return tokens_per_second(marks, len(train[0]["ranks"])), {"job_dir": str(job_dir)}

    def contender_args(self, script: str, out: str) -> list[str]:
        args = [f"{self.root}/contenders/{script}", *self.shared(), "--data"]
        args += [f"{self.root}/data.jsonl", "--out", out, "--workers", str(self.device["workers"])]
        return args + (
            ["--gradient-checkpointing"] if self.device["gradient_checkpointing"] else []
        )

    def local(self, script: str, job_dir: str) -> float:
        """A contender under plain torchrun on this machine: as many ranks as UGRO's job ran,
        with the threads its launch gave each."""
        self.runs += 1
        config = json.loads((Path(job_dir) / "train_config.json").read_text())
        out = f"{self.root}/{script}-{self.runs}.json"
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        argv += [f"--nproc-per-node={config['world_size']}", *self.contender_args(script, out)]
        env = {**os.environ, "OMP_NUM_THREADS": threads(Path(job_dir))}
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=3600, check=False, env=env
        )
        if done.returncode != 0:
            raise RuntimeError(f"{script} failed: {done.stdout[-1500:]}{done.stderr[-1500:]}")
        report = json.loads(Path(out).read_text())
        return tokens_per_second(report["marks"], report["world_size"])

    def by_hand(self, box, script: str, job_dir: str) -> float:
        """A contender on the sandbox's nodes: the UGRO job's torchrun commands by hand over ssh,
        their own rendezvous, the contender's script in place of UGRO's."""
        self.runs += 1
        job = json.loads((Path(job_dir) / "config.json").read_text())
        port = 29900 + self.runs
        out = f"{STAGE}/{script}-{self.runs}.json"
        processes = []
        for name, command in job["commands"].items():
            wrapper = next(i for i, a in enumerate(command) if a.endswith("ugro_rank.py"))
            prefix = [
                f"{job['job_id']}-{script}-{self.runs}"
                if previous == "--rdzv-id"
                else value.replace(f":{job['rendezvous_port']}", f":{port}")
                for previous, value in zip(["", *command], command[:wrapper], strict=False)
            ]
            node = next((n for n in box.nodes if n.name == name), None)  # None: the master
            home = str(Path.home()) if node is None else node.home
            argv = [
                "env", f"OMP_NUM_THREADS={threads(Path(job_dir))}",
                f"GLOO_SOCKET_IFNAME={box.bridge if node is None else 'eth0'}",
                *prefix, *self.contender_args(script, f"{home}/{out}"),
            ]  # fmt: skip
            argv = [a.replace(self.root, f"{home}/{STAGE}") for a in argv]
            if node is not None:
                argv = box.ssh_argv(node, argv)
            processes.append(
                subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            )
        for process in processes:
            output = process.communicate(timeout=3600)[0]
            if process.returncode != 0:
                raise RuntimeError(f"{script} by hand failed: {output.decode()[-1500:]}")
        report = read_report(box, out)
        return tokens_per_second(report["marks"], report["world_size"])


def threads(job_dir: Path) -> str:
    """The threads UGRO's launch gave each rank (launch.sh's OMP_NUM_THREADS): by hand, the same."""
    for line in (job_dir / "launch.sh").read_text().splitlines():
        if line.startswith("export OMP_NUM_THREADS="):
            return line.split("=", 1)[1]
    return "1"


def sandbox_cluster(box, work: Path) -> Path:
    """The sandbox's cluster file with each node's share of this machine's cores declared
    (hardware.cpu_cores): its nodes share one machine, and ranks that each took every core
    would spend the run oversubscribed."""
    data = yaml.safe_load(box.cluster_file.read_text())
    share = max(1, (os.cpu_count() or 1) // (1 + len(data.get("workers") or [])))
    for node in [data["cluster"]["master"], *(data.get("workers") or [])]:
        node.setdefault("hardware", {})["cpu_cores"] = share
    path = work / "sandbox-cluster.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def read_report(box, out: str) -> dict:
    """The contender's report, from whichever node held its rank 0."""
    local = Path.home() / out
    if local.exists():
        return json.loads(local.read_text())
    for node in box.nodes:
        done = subprocess.run(
            box.ssh_argv(node, ["cat", out]), capture_output=True, text=True, check=False
        )
        if done.returncode == 0:
            return json.loads(done.stdout)
    raise RuntimeError(f"no node holds {out}")


def experiments(config: Path) -> Path:
    paths = (yaml.safe_load(config.read_text()) or {}).get("paths") or {}
    root = Path(paths.get("project_root", "~/projects/UGRO")).expanduser()
    return Path(paths.get("experiments", root / "data" / "experiments")).expanduser()


def local_cluster(work: Path) -> Path:
    """The built-in cluster (config/cluster.yaml), its experiments kept in the bench's folder."""
    data = yaml.safe_load((REPO / "config" / "cluster.yaml").read_text())
    data["paths"] = {"project_root": str(work / "project")}
    path = work / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def copy_to_nodes(box, folder: Path) -> None:
    """The staged files into ~/ugro-bench on every node (over ssh to the workers)."""
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w") as tar:
        tar.add(folder, arcname=STAGE)
    target = Path.home() / STAGE
    if target.resolve() != folder.resolve():
        subprocess.run(["rm", "-rf", str(target)], check=True)
        subprocess.run(["cp", "-r", str(folder), str(target)], check=True)
    for node in box.nodes:
        subprocess.run(
            box.ssh_argv(node, ["tar", "-x", "-f", "-"]),
            input=payload.getvalue(),
            check=True,
            capture_output=True,
        )


def trl_available(box=None, job_dir: str | None = None) -> bool:
    """Whether trl and datasets import where the contenders run: here, or (on a sandbox) in
    every node's training environment, the interpreter the UGRO job's commands start."""
    if box is None:
        argvs = [[sys.executable, "-c", "import trl, datasets"]]
    else:
        commands = json.loads((Path(job_dir) / "config.json").read_text())["commands"]
        argvs = []
        for name, command in commands.items():
            probe = [command[0], "-c", "import trl, datasets"]
            node = next((n for n in box.nodes if n.name == name), None)
            argvs.append(probe if node is None else box.ssh_argv(node, probe))
    return all(subprocess.run(a, capture_output=True, check=False).returncode == 0 for a in argvs)


def summarise(samples: dict[str, list[float]]) -> dict:
    result: dict = {
        name: {"median": round(statistics.median(v), 1), "samples": [round(x, 1) for x in v]}
        for name, v in samples.items()
        if v
    }
    median = {name: r["median"] for name, r in result.items()}
    if "plain" in median:
        result["ugro_over_plain"] = round(median["ugro"] / median["plain"], 3)
    if "trl" in median:
        result["ugro_over_trl"] = round(median["ugro"] / median["trl"], 3)
    if "ugro_packed" in median:
        result["packed_over_unpacked"] = round(median["ugro_packed"] / median["ugro"], 3)
    return result


def memory(args, work: Path) -> dict:
    """Peak memory of training with and without gradient checkpointing, each a fresh process
    (train_production.py alone; on the CPU its peak RSS, on a GPU its peak allocation)."""
    found = {}
    for flag in ("--no-gradient-checkpointing", "--gradient-checkpointing"):
        out = work / flag.strip("-")
        argv = [
            sys.executable, str(REPO / "scripts" / "train_production.py"),
            "--model", args.model, "--dataset", "builtin-chat", "--packing",
            "--max-seq-length", str(args.max_seq_length), "--batch-size", str(args.batch_size),
            "--max-steps", "2", "--logging-steps", "1", "--eval-strategy", "no",
            "--save-strategy", "no", "--output-dir", str(out), flag,
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=3600, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"train_production.py {flag} failed: {done.stderr[-1500:]}")
        lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        found[flag.strip("-")] = max(max(r["peak_memory_mb"]) for r in lines)
    found["saved"] = round(
        1 - found["gradient-checkpointing"] / found["no-gradient-checkpointing"], 3
    )
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--model", default="llama-20m", help="tiny-llama, llama-20m or llama-100m")
    p.add_argument("--max-seq-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--conversations", type=int, default=2400)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--sandbox", help="run on this sandbox's nodes (`ugro sandbox up`)")
    p.add_argument("--no-trl", action="store_true", help="leave TRL's SFTTrainer out")
    p.add_argument("--smoke", action="store_true", help="one short repetition: it still runs")
    p.add_argument("--out", help="the JSON report (default: bench/results/throughput-*.json)")
    p.add_argument(
        "--memory",
        action="store_true",
        help="instead: peak memory of a training step with and without gradient checkpointing",
    )
    args = p.parse_args(argv)
    if args.memory:
        report = memory(args, Path(tempfile.mkdtemp(prefix="ugro-memory-")))
        out = Path(args.out) if args.out else RESULTS / "throughput-memory.json"
        out.write_text(json.dumps({"settings": vars(args), "peak_memory_mb": report}, indent=2))
        print(json.dumps(report, indent=2))
        return 0
    if args.smoke:
        args.reps, args.steps, args.logging_steps, args.conversations = 1, 6, 2, 200
        args.model = "tiny-llama"
    device = device_settings(args.gradient_checkpointing)
    work = Path(tempfile.mkdtemp(prefix="ugro-throughput-"))
    box = None
    if args.sandbox:
        from ugro.sandbox import layout

        box = layout.load(args.sandbox)
        if box is None:
            p.error(f"no sandbox named {args.sandbox} is up (`ugro sandbox up`)")
        stage(work / STAGE, args.model, args.conversations)
        copy_to_nodes(box, work / STAGE)
        config, root = sandbox_cluster(box, work), f"~/{STAGE}"
    else:
        stage(work / STAGE, args.model, args.conversations)
        config, root = local_cluster(work), str(work / STAGE)
    bench = Bench(args, device, config, root)
    trl = None
    samples: dict[str, list[float]] = {"ugro": [], "plain": [], "trl": [], "ugro_packed": []}
    for _ in range(args.reps):
        speed, run = bench.ugro(packing=False)
        samples["ugro"].append(speed)
        if trl is None:
            trl = not args.no_trl and trl_available(box, run["job_dir"])
        for script, name in (("plain_trainer.py", "plain"), ("trl_sft.py", "trl")):
            if name == "trl" and not trl:
                continue
            if box is None:
                samples[name].append(bench.local(script, run["job_dir"]))
            else:
                samples[name].append(bench.by_hand(box, script, run["job_dir"]))
        if not args.smoke:  # the smoke run keeps to what CI covers nowhere else
            samples["ugro_packed"].append(bench.ugro(packing=True)[0])
    report = {
        "where": f"sandbox {args.sandbox}" if box else "the built-in cluster",
        "settings": {k: v for k, v in vars(args).items() if k != "out"} | device,
        "tokens_per_s_per_rank": summarise(samples),
        "trl": "measured" if trl else "left out: trl and datasets are not installed where it runs",
    }
    out = (
        Path(args.out)
        if args.out
        else RESULTS / f"throughput-{'smoke' if args.smoke else 'run'}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["tokens_per_s_per_rank"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
