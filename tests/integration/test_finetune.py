"""Fine-tuning on conversations across the 3-node sandbox: a JSONL file of chats on the master,
carried by the job to every node, packed, trained with the loss on the answers only. The eval
loss falls, and the adapter answers training prompts more like their answers than the base model
does (a small but real check that it learned the answers, not the prompts)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_ugro
from tests.integration.conftest import ssh_as
from ugro.config import load_cluster_file
from ugro.records.history import Jobs

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]
STEPS = 40


def one_core_each(sandbox, tmp_path: Path) -> Path:
    """The sandbox's cluster with one core declared per node: its three nodes share this
    machine's two, and ranks that each took both would spend the run oversubscribed."""
    data = yaml.safe_load(sandbox.cluster_file.read_text())
    for node in [data["cluster"]["master"], *data["workers"]]:
        node.setdefault("hardware", {})["cpu_cores"] = 1
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def common_prefix(a: str, b: str) -> int:
    """How many characters two texts share from their start."""
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def test_a_chat_jsonl_trains_on_the_answers(sandbox, trainlib, tmp_path) -> None:
    import torch

    chats = trainlib.conversations.builtin_conversations(count=600, seed=7)
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in chats))
    cluster_file = one_core_each(sandbox, tmp_path)
    env = {"UGRO_CONFIG": str(cluster_file)}
    # The file is on the master only: the job carries it to every node.
    done = run_ugro(
        "launch",
        "--name",
        "chat",
        "--dataset",
        str(data),
        "--",
        "--packing",
        "--max-seq-length",
        "256",
        "--batch-size",
        "2",
        "--max-steps",
        str(STEPS),
        "--lr",
        "2e-2",
        "--warmup-steps",
        "0",
        "--eval-strategy",
        "steps",
        "--eval-steps",
        str(STEPS // 2),
        "--logging-steps",
        "10",
        "--save-strategy",
        "no",
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    job_id = done.stdout.split("Launched ", 1)[1].split(" ", 1)[0]
    out = Jobs(load_cluster_file(cluster_file)).experiment_dir(job_id)

    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    assert hashlib.sha256((out / "data" / "chats.jsonl").read_bytes()).hexdigest() == digest
    for node in sandbox.nodes:
        copy = f"projects/UGRO/data/experiments/{job_id}/data/chats.jsonl"
        assert ssh_as(sandbox, node, "sha256sum", copy).stdout.split()[:1] == [digest], node.name
    config = json.loads((out / "train_config.json").read_text())
    assert config["dataset"] == "data/chats.jsonl"
    assert config["dataset_format_used"] == "chat" and config["packing"] is True
    assert config["data"]["padding_packed"] < 0.03 and config["world_size"] == 3
    evals = [
        r["eval_loss"]
        for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
        if r.get("kind") == "eval"
    ]
    assert len(evals) == 2 and evals[-1] < evals[0]

    # Greedy answers to training prompts, from the base and from base + adapter.
    base_dir, adapter_dir = out / "artifacts" / "base_model", out / "artifacts" / "adapter"
    tokenizer = trainlib.transformers.AutoTokenizer.from_pretrained(adapter_dir)
    auto = trainlib.transformers.AutoModelForCausalLM
    base = auto.from_pretrained(base_dir).eval()
    tuned = trainlib.peft.PeftModel.from_pretrained(auto.from_pretrained(base_dir), adapter_dir)
    scores = {"base": 0, "tuned": 0}
    for chat in chats[:12]:
        prompt = tokenizer.apply_chat_template(
            chat[: next(i for i, t in enumerate(chat) if t["role"] == "assistant")],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        answer = next(t["content"] for t in chat if t["role"] == "assistant")
        for name, model in (("base", base), ("tuned", tuned.eval())):
            with torch.no_grad():
                ids = model.generate(**prompt, max_new_tokens=12, do_sample=False)
            said = tokenizer.decode(ids[0, prompt["input_ids"].shape[1] :])
            scores[name] += common_prefix(said, answer)
    assert scores["tuned"] > scores["base"], scores
