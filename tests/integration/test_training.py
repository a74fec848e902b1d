"""The training scripts under real torchrun (gloo on the CPU) with the offline tiny Llama."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
SCRIPTS = REPO / "scripts"
TINY = [
    "--model",
    "tiny-llama",
    "--dataset",
    "builtin",
    "--max-seq-length",
    "64",
    "--lr",
    "1e-2",
    "--warmup-steps",
    "0",
    "--eval-strategy",
    "no",
    "--save-strategy",
    "no",
]
# Single-host gloo on loopback: without an interface named, gloo may pick an address another
# interface (a sandbox bridge) holds and hang.
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "GLOO_SOCKET_IFNAME": "lo",
}


def torchrun(
    nproc: int, script: str, *args: str, timeout: float = 300, env: dict | None = None, **popen
):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        str(SCRIPTS / script),
        *args,
    ]
    env = env or ENV
    if popen:
        return subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def kill_everything_mentioning(marker: str) -> None:
    """SIGKILL the agent and every worker: torchrun starts its workers in sessions of their own,
    so killing the agent's process group alone would leave them training."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def records(out: Path, kind: str = "train") -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    return [r for r in parsed if r["kind"] == kind]


@pytest.mark.parametrize("world", [2, 3])
def test_lora_training_under_torchrun(tmp_path: Path, world: int) -> None:
    out = tmp_path / "run"
    done = torchrun(
        world,
        "train_production.py",
        *TINY,
        "--output-dir",
        str(out),
        "--batch-size",
        "2",
        "--max-steps",
        "24",
        "--logging-steps",
        "4",
        "--eval-strategy",
        "steps",
        "--eval-steps",
        "24",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    train = records(out)
    assert [r["step"] for r in train] == [4, 8, 12, 16, 20, 24]
    for record in train:
        assert {
            "epoch",
            "loss",
            "learning_rate",
            "grad_norm",
            "tokens_per_s",
            "samples_per_s",
            "elapsed_s",
        } <= set(record)
        assert len(record["peak_memory_mb"]) == world and min(record["peak_memory_mb"]) > 0
        assert record["tokens_per_s"] > 0
    assert train[-1]["loss"] < train[0]["loss"] - 0.5, [r["loss"] for r in train]
    (evaluation,) = records(out, "eval")
    assert evaluation["step"] == 24 and evaluation["eval_loss"] < 5.0
    assert len(records(out, "summary")) == 1
    assert json.loads((out / "train_config.json").read_text())["world_size"] == world

    # The adapter loads with peft onto the saved base and gives the logits training ended with.
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(out / "artifacts" / "base_model")
    model = PeftModel.from_pretrained(base, out / "artifacts" / "adapter").eval()
    probe = torch.load(out / "artifacts" / "probe.pt")
    with torch.no_grad():
        logits = model(input_ids=probe["input_ids"]).logits
    torch.testing.assert_close(logits, probe["logits"], rtol=1e-5, atol=1e-5)


# Runs train_production.main under torchrun, noting how many DDP modules are still alive when
# the process group is about to be destroyed.
_TEARDOWN_WATCH = """
import gc, os, sys
sys.path.insert(0, {scripts!r})
import train_production
from torch.nn.parallel import DistributedDataParallel

finish = train_production._finish

def watched_finish():
    live = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
    with open(os.path.join({out!r}, "live-ddp." + os.environ["RANK"]), "w") as handle:
        handle.write(str(live))
    finish()

train_production._finish = watched_finish
sys.exit(train_production.main(sys.argv[1:]))
"""


def test_the_ddp_model_is_gone_before_the_process_group(tmp_path: Path) -> None:
    """Freed after destroy_process_group, the DDP reducer destroys the gloo group holding the GIL,
    which deadlocks when a gloo thread needs the GIL (a rank hung after training, seen in CI)."""
    out = tmp_path / "run"
    out.mkdir()
    watch = tmp_path / "watch.py"
    watch.write_text(_TEARDOWN_WATCH.format(scripts=str(SCRIPTS), out=str(out)))
    done = torchrun(
        2,
        str(watch),
        *TINY,
        "--defaults",
        str(REPO / "config" / "training_defaults.yaml"),
        "--output-dir",
        str(out),
        "--max-steps",
        "2",
        "--logging-steps",
        "1",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert {path.name: path.read_text() for path in out.glob("live-ddp.*")} == {
        "live-ddp.0": "0",
        "live-ddp.1": "0",
    }


def test_one_rank_and_three_ranks_agree(tmp_path: Path) -> None:
    """Same global batch (3 blocks, in order) and seed: the first losses agree to 1e-4."""
    common = [
        *TINY,
        "--no-shuffle",
        "--lora-dropout",
        "0",
        "--max-steps",
        "5",
        "--logging-steps",
        "1",
        "--grad-accum",
        "1",
    ]
    single = torchrun(
        1,
        "train_production.py",
        *common,
        "--batch-size",
        "3",
        "--output-dir",
        str(tmp_path / "one"),
    )
    triple = torchrun(
        3,
        "train_production.py",
        *common,
        "--batch-size",
        "1",
        "--output-dir",
        str(tmp_path / "three"),
    )
    assert single.returncode == 0, single.stderr[-3000:]
    assert triple.returncode == 0, triple.stderr[-3000:]
    one = [r["loss"] for r in records(tmp_path / "one")]
    three = [r["loss"] for r in records(tmp_path / "three")]
    assert len(one) == len(three) == 5
    for a, b in zip(one, three, strict=True):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (one, three)


def test_an_uneven_split_computes_the_full_batch_gradient(tmp_path: Path) -> None:
    """1, 2 and 5 samples per micro-step on three ranks (--balance manual's path), two micro-steps:
    the first optimizer step's gradients equal one process's on the same 16 samples, to 1e-5
    relative in fp32 on the CPU. Without the token weighting (each rank's mean loss averaged),
    the rank with 1 sample would weigh as much as the rank with 5: far off."""
    common = [
        *TINY,
        "--dtype",
        "float32",
        "--no-shuffle",
        "--lora-dropout",
        "0",
        "--max-grad-norm",
        "1e9",
        "--max-steps",
        "1",
        "--grad-accum",
        "2",
    ]
    single = torchrun(
        1,
        "train_production.py",
        *common,
        "--batch-size",
        "8",
        "--output-dir",
        str(tmp_path / "one"),
        env={**ENV, "UGRO_GRADIENT_DUMP": str(tmp_path / "one.pt")},
    )
    # Each rank's node would give it its micro-batch (UGRO_MICRO_BATCH); torchrun's --standalone
    # gives every rank one environment, so a wrapper picks each rank's from its local rank.
    wrapper = tmp_path / "per_rank.py"
    wrapper.write_text(
        "import os, runpy, sys\n"
        "os.environ['UGRO_MICRO_BATCH'] = ['1', '2', '5'][int(os.environ['LOCAL_RANK'])]\n"
        f"sys.argv[0] = {str(SCRIPTS / 'train_production.py')!r}\n"
        f"sys.path.insert(0, {str(SCRIPTS)!r})\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    uneven = torchrun(
        3,
        str(wrapper),
        *common,
        "--output-dir",
        str(tmp_path / "three"),
        env={
            **ENV,
            "UGRO_BALANCE": "manual",
            "UGRO_GRADIENT_DUMP": str(tmp_path / "three.pt"),
        },
    )
    assert single.returncode == 0, single.stderr[-3000:]
    assert uneven.returncode == 0, uneven.stderr[-3000:]
    plan = json.loads((tmp_path / "three" / "balance.json").read_text())
    assert [r["micro_batch"] for r in plan["ranks"]] == [1, 2, 5]
    assert plan["accumulation"] == 2 and plan["global_batch"] == 16

    import torch

    one = torch.load(tmp_path / "one.pt")
    three = torch.load(tmp_path / "three.pt")
    assert one.keys() == three.keys()
    # LoRA's B starts at zero, so A's first gradients are zero: compare the others, and those
    # stay zero.
    moving = [name for name, grad in one.items() if grad.norm().item() > 0]
    assert len(moving) >= len(one) // 2, moving
    for name, grad in one.items():
        difference = (three[name] - grad).norm().item()
        assert difference <= 1e-5 * max(grad.norm().item(), 1e-12), (name, difference)


def test_resume_after_a_kill_skips_a_truncated_checkpoint(tmp_path: Path) -> None:
    args = [
        *TINY,
        "--save-strategy",
        "steps",
        "--save-steps",
        "4",
        "--max-steps",
        "24",
        "--logging-steps",
        "1",
        "--batch-size",
        "2",
    ]
    reference = tmp_path / "reference"
    done = torchrun(2, "train_production.py", *args, "--output-dir", str(reference))
    assert done.returncode == 0, done.stderr[-3000:]
    expected = {r["step"]: r["loss"] for r in records(reference)}

    out = tmp_path / "killed"
    process = torchrun(2, "train_production.py", *args, "--output-dir", str(out), popen=True)
    seal = out / "checkpoints" / "checkpoint-8" / "ugro_complete.json"
    deadline = time.monotonic() + 240
    while not seal.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    kill_everything_mentioning(str(out))
    process.wait(30)
    assert seal.exists(), "the run never sealed checkpoint-8"
    sealed = sorted(
        int(p.parent.name.split("-")[1])
        for p in (out / "checkpoints").glob("checkpoint-*/ugro_complete.json")
    )
    assert sealed[-1] < 24, "the run finished before it was killed; nothing to resume"
    # Damage the newest sealed checkpoint: resume must fall back to the one before it.
    newest = out / "checkpoints" / f"checkpoint-{sealed[-1]}" / "optimizer.pt"
    newest.write_bytes(newest.read_bytes()[:100])
    fallback = sealed[-2] if len(sealed) > 1 else None

    done = torchrun(2, "train_production.py", *args, "--output-dir", str(out), "--resume", "auto")
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((out / "train_config.json").read_text())
    assert config["resume_from"] == (
        str(out / "checkpoints" / f"checkpoint-{fallback}") if fallback else None
    )
    resumed = [r for r in records(out) if r["step"] > (fallback or 0)][-(24 - (fallback or 0)) :]
    assert [r["step"] for r in resumed] == list(range((fallback or 0) + 1, 25))
    for record in resumed:
        assert abs(record["loss"] - expected[record["step"]]) < 1e-3, (record, expected)


@pytest.mark.usefixtures("needs_torch")
def test_a_retry_after_the_last_checkpoint_trains_nothing(
    tmp_path: Path, monkeypatch, capsys, caplog
) -> None:
    """An attempt that failed after its last checkpoint (saving its artifacts, say), retried:
    the Trainer alone would train one step past --max-steps and change the finished adapter."""
    from safetensors.torch import load_file

    caplog.set_level("INFO", logger="train_production")
    out = tmp_path / "o"
    args = [*TINY, "--save-strategy", "steps", "--save-steps", "3", "--max-steps", "3"]
    args += ["--logging-steps", "1", "--output-dir", str(out)]
    code, err = in_process("train_production", args, monkeypatch, capsys)
    assert code == 0, err
    adapter = out / "artifacts" / "adapter" / "adapter_model.safetensors"
    trained = load_file(adapter)
    adapter.unlink()  # as if the attempt had died writing it

    code, err = in_process("train_production", [*args, "--resume", "auto"], monkeypatch, capsys)
    assert code == 0, err
    assert "checkpoint-3 holds every step: nothing left to train" in caplog.text
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(line["step"] for line in lines) == 3
    again = load_file(adapter)
    assert again.keys() == trained.keys()
    assert all(again[name].equal(trained[name]) for name in trained)

    # Asked for more steps, the same checkpoint trains on to them.
    more = [*args, "--max-steps", "5", "--resume", "auto"]  # the later --max-steps counts
    code, err = in_process("train_production", more, monkeypatch, capsys)
    assert code == 0, err
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(line["step"] for line in lines) == 5


def test_single_test_passes_on_the_cpu() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "train_single_test.py")],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "tokens/s" in done.stdout and "peak memory" in done.stdout and "OK" in done.stdout


def in_process(
    script: str, args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> tuple[int, str]:
    """A training script's main() here: its exit code (argparse's too) and its stderr. What it
    sets for the process (warnings' display, the hub's progress bars) is put back after."""
    import importlib
    import warnings

    monkeypatch.syspath_prepend(str(SCRIPTS))
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    for name in ("HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE", "OMP_NUM_THREADS"):
        monkeypatch.setenv(name, os.environ.get(name, "1"))
    module = importlib.import_module(script)
    try:
        code = module.main(args)
    except SystemExit as exc:
        code = exc.code
    return int(code or 0), capsys.readouterr().err


@pytest.mark.usefixtures("needs_torch")
@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--device", "cuda"], 2, "--device cuda, but torch"),
        (
            ["--model", "/nonexistent/model"],
            2,
            "--model /nonexistent/model: no such model directory",
        ),
        (["--lr", "1e-12"], 1, "FAIL: the loss did not fall"),
        (["--steps", "0"], 2, "--steps must be at least"),
    ],
)
def test_single_test_fails_clearly(
    args: list[str], code: int, message: str, monkeypatch, capsys
) -> None:
    returned, err = in_process("train_single_test", args, monkeypatch, capsys)
    assert returned == code, err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.usefixtures("needs_torch")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-seq-length", "4096"], "--max-seq-length 4096 exceeds the 256 positions"),
        (["--batch-size", "0"], "argument --batch-size: 0 must be greater than 0"),
        (["--model", "./no/such/model"], "no such model directory"),
        (["--target-modules", "nope_proj"], "--target-modules: nope_proj not in the model"),
    ],
)
def test_bad_options_are_one_line(
    tmp_path: Path, args: list[str], message: str, monkeypatch, capsys
) -> None:
    """Each option a rank checks, checked here in one process: every rank runs the same checks
    on the same options (the test below shows they all stop under torchrun)."""
    code, err = in_process(
        "train_production", [*TINY, *args, "--output-dir", str(tmp_path / "o")], monkeypatch, capsys
    )
    assert code == 2, err
    assert message in err
    assert "Traceback" not in err


def test_a_bad_option_stops_every_rank(tmp_path: Path) -> None:
    started = time.monotonic()
    done = torchrun(
        2,
        "train_production.py",
        *TINY,
        "--target-modules",
        "nope_proj",
        "--output-dir",
        str(tmp_path / "o"),
        timeout=180,
    )
    assert done.returncode != 0
    # Each rank checks its options before any collective and stops with this line; torchrun may
    # stop a rank's sibling before it gets to print it, so at least one rank says it.
    assert "--target-modules: nope_proj not in the model" in done.stderr, done.stderr[-3000:]
    # torchrun prints its own ChildFailedError traceback; none may come from our code.
    assert f'File "{SCRIPTS}' not in done.stderr
    assert time.monotonic() - started < 150


def test_empty_corpus(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "train_production.py"),
            "--model",
            "tiny-llama",
            "--dataset",
            str(empty),
            "--output-dir",
            str(tmp_path / "o"),
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().endswith(f"--dataset {empty}: the corpus is empty")
