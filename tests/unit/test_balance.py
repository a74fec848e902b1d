"""The balanced split (scripts/trainlib/balance.py): shares, the per-rank sampler, the probe."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def balance() -> Iterator[ModuleType]:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from trainlib import balance

        yield balance
    finally:
        sys.path.remove(str(REPO / "scripts"))


def test_equal_speeds_share_equally(balance: ModuleType) -> None:
    plan = balance.split(24, fits=[64, 64, 64], speeds=[1.0, 1.0, 1.0])
    assert plan.micro_batches == [8, 8, 8] and plan.accumulation == 1


def test_a_quarter_speed_rank_takes_a_quarter_share(balance: ModuleType) -> None:
    plan = balance.split(36, fits=[64, 64, 64], speeds=[4.0, 4.0, 1.0])
    assert plan.micro_batches == [16, 16, 4] and plan.global_batch == 36


def test_memory_caps_a_fast_rank_and_the_others_take_the_rest(balance: ModuleType) -> None:
    plan = balance.split(24, fits=[4, 64, 64], speeds=[10.0, 1.0, 1.0])
    assert plan.micro_batches == [4, 10, 10] and plan.accumulation == 1


def test_too_little_memory_for_one_micro_step_accumulates(balance: ModuleType) -> None:
    # 32 samples, but the ranks hold 4 + 4 + 2 = 10 at once: 4 micro-steps of 8.
    plan = balance.split(32, fits=[4, 4, 2], speeds=[1.0, 1.0, 1.0])
    assert plan.accumulation == 4 and sum(plan.micro_batches) == 8
    assert all(b <= f for b, f in zip(plan.micro_batches, [4, 4, 2], strict=True))
    assert plan.global_batch == 32


def test_every_rank_gets_at_least_one_sample(balance: ModuleType) -> None:
    plan = balance.split(12, fits=[64, 64, 64], speeds=[100.0, 100.0, 0.01])
    assert min(plan.micro_batches) == 1 and plan.global_batch == 12


def test_rounding_keeps_the_total(balance: ModuleType) -> None:
    for total in range(3, 40):
        plan = balance.split(total, fits=[7, 50, 50], speeds=[3.0, 2.0, 1.3])
        assert plan.global_batch == total
        assert plan.micro_batches[0] <= 7 and min(plan.micro_batches) >= 1


def test_impossible_splits_say_why(balance: ModuleType) -> None:
    with pytest.raises(balance.TrainingSetupError, match="at least the number of ranks"):
        balance.split(2, fits=[8, 8, 8], speeds=[1, 1, 1])
    with pytest.raises(balance.TrainingSetupError, match="rank 1 cannot fit even one sample"):
        balance.split(8, fits=[8, 0, 8], speeds=[1, 1, 1])


@pytest.mark.parametrize("shuffle", [False, True])
def test_the_ranks_slices_cover_each_micro_step_once(balance: ModuleType, shuffle: bool) -> None:
    shares = [1, 2, 5]
    samplers = [
        balance.UnevenBatchSampler(50, shares, rank, shuffle=shuffle, seed=3) for rank in range(3)
    ]
    lengths = {len(s) for s in samplers}
    assert lengths == {6}  # 50 // 8: every rank runs the same number of micro-steps
    steps = [list(s) for s in samplers]
    seen: list[int] = []
    for step in range(6):
        got = [steps[rank][step] for rank in range(3)]
        assert [len(g) for g in got] == shares
        seen += [i for g in got for i in g]
    assert len(set(seen)) == len(seen) == 48
    if not shuffle:
        assert steps[0][0] == [0] and steps[1][0] == [1, 2] and steps[2][0] == [3, 4, 5, 6, 7]
    else:
        first = list(samplers[0])
        samplers[0].set_epoch(1)
        assert list(samplers[0]) != first  # a new order each epoch, the same on every rank


def test_the_cpu_probe_counts_memory_and_honours_the_budget(
    balance: ModuleType, tmp_path, monkeypatch
) -> None:
    """The CPU stand-in for device memory: a declared budget, and a step's memory counted from
    the weights, the trainable state and the tensors saved for backward. Cached by its key."""
    import torch

    torch.manual_seed(0)
    model = _TinyLM()
    sample = {"input_ids": torch.arange(16) % 10, "labels": torch.arange(16) % 10}
    monkeypatch.setenv(balance.CACHE_ENV, str(tmp_path))
    unlimited = balance._step_memory_gb(model, sample, 8, False)
    small = balance._step_memory_gb(model, sample, 1, False)
    assert unlimited > small > 0
    # A budget between what 2 and what 4 samples need: the fit is 2.
    two, four = (balance._step_memory_gb(model, sample, n, False) for n in (2, 4))
    monkeypatch.setenv(balance.BUDGET_ENV, str((two + four) / 2))
    monkeypatch.setattr(balance, "SPEED_SECONDS", 0.01)
    found = balance.probe(model, sample, cap=16, cache_key={"model": "t"})
    assert found.fit == 2 and found.budget_source == "declared" and not found.cached
    assert found.samples_per_s > 0
    again = balance.probe(model, sample, cap=16, cache_key={"model": "t"})
    assert again.fit == 2 and again.cached
    other = balance.probe(model, sample, cap=16, cache_key={"model": "u"})
    assert not other.cached


class _TinyLM:
    """A stand-in language model with the `.loss` a Trainer model returns (the probe only needs
    forward, backward and parameters)."""

    def __new__(cls):  # type: ignore[misc]
        import torch
        from torch import nn

        class Model(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.embed = nn.Embedding(10, 32)
                self.embed.weight.requires_grad_(False)
                self.head = nn.Linear(32, 10)

            def forward(self, input_ids, labels):  # type: ignore[no-untyped-def]
                logits = self.head(torch.tanh(self.embed(input_ids)))
                loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
                return type("Out", (), {"loss": loss})()

        return Model()


# --- The launch's side (ugro/balance.py) ----------------------------------------------------------


def _cluster(tmp_path, workers: list[dict]):
    from tests.unit.conftest import master_and_workers

    return master_and_workers(tmp_path, workers, accelerator="cpu")


def test_alike_nodes_are_equal_and_mixed_gpus_auto(tmp_path) -> None:
    from ugro.launch.balance import choose_mode

    alike = _cluster(tmp_path, [{"accelerator": "cpu"}, {"accelerator": "cpu"}])
    assert choose_mode(alike, (), None, own_script=False) == "equal"
    assert choose_mode(alike, (), "auto", own_script=False) == "auto"
    budget = _cluster(tmp_path, [{"accelerator": "cpu", "hardware": {"vram_gb": 0.5}}])
    assert choose_mode(budget, (), None, own_script=False) == "auto"
    gpus = _cluster(
        tmp_path,
        [
            {"accelerator": "cuda", "hardware": {"gpu_model": "RTX 4070", "vram_gb": 8}},
            {"accelerator": "cuda", "hardware": {"gpu_model": "RTX 3070 Ti", "vram_gb": 8}},
        ],
    )
    assert choose_mode(gpus, ("w0", "w1"), None, own_script=False) == "auto"
    assert choose_mode(gpus, ("w0",), None, own_script=False) == "equal"
    # A user's script splits its own batches.
    assert choose_mode(gpus, (), None, own_script=True) == "equal"


def test_bad_balance_requests_are_one_line(tmp_path) -> None:
    from ugro.core.errors import UsageError
    from ugro.launch.balance import choose_mode

    cluster = _cluster(tmp_path, [{"accelerator": "cpu", "micro_batch_size": 4}])
    with pytest.raises(UsageError, match=r"--balance manual: m has no micro_batch_size in "):
        choose_mode(cluster, (), "manual", own_script=False)
    assert choose_mode(cluster, ("w0",), "manual", own_script=False) == "manual"
    with pytest.raises(UsageError, match="a --script splits its own"):
        choose_mode(cluster, (), "auto", own_script=True)
    with pytest.raises(UsageError, match="expected one of auto, equal, manual"):
        choose_mode(cluster, (), "fast", own_script=False)


def test_the_plan_says_each_share_and_why() -> None:
    from ugro.launch.balance import plan_lines

    plan = {
        "mode": "auto",
        "global_batch": 24,
        "accumulation": 2,
        "ranks": [
            {
                "rank": 0,
                "node": "m",
                "micro_batch": 4,
                "fit": 4,
                "samples_per_s": 400.0,
                "budget_source": "declared",
                "budget_gb": 0.5,
            },
            {
                "rank": 1,
                "node": "w0",
                "micro_batch": 6,
                "fit": 16,
                "samples_per_s": 300.0,
                "budget_source": "device",
            },
            {
                "rank": 2,
                "node": "w1",
                "micro_batch": 2,
                "fit": 16,
                "samples_per_s": 100.0,
                "budget_source": "ram",
            },
        ],
    }
    lines = plan_lines(plan)
    assert lines[0] == "Batches (auto): a global batch of 24 = 2 micro-steps of 12 samples"
    assert lines[1].startswith("  m rank 0: 4 (33%): held to what fits: 4 fit 0.5 GB declared")
    assert "300.0 samples/s (38% of the cluster's)" in lines[2]
    assert "16 fit its free GPU memory" in lines[2]
    assert lines[3].startswith("  w1 rank 2: 2 (17%): 100.0 samples/s")
    assert plan_lines({}) == [] and plan_lines({"ranks": "junk"}) == []
