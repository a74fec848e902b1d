"""Placement and sweeps: where a queued job starts, why one waits, what a sweep queues."""

from __future__ import annotations

import pytest

from ugro.core.errors import UsageError
from ugro.queue.schedule import NodeView, Placement, Waiting, schedule
from ugro.queue.sweeps import sweep_args, sweep_job_name, sweep_points

NODES = ("gpu-master", "gpu1", "gpu2")


def views(**overrides: dict) -> list[NodeView]:
    return [
        NodeView(**{"name": name, "healthy": True, **overrides.get(name, {})}) for name in NODES
    ]


def started(decisions) -> dict[str, tuple[str, ...]]:
    return {d.job_id: d.nodes for d in decisions if d.nodes}


def reasons(decisions) -> dict[str, str]:
    return {d.job_id: d.reason for d in decisions if not d.nodes}


def test_first_come_first_served_on_free_nodes() -> None:
    queue = [Waiting("a", Placement()), Waiting("b", Placement())]
    decisions = schedule(queue, views())
    assert started(decisions) == {"a": NODES}
    assert reasons(decisions) == {"b": "gpu-master busy with a; gpu1 busy with a; gpu2 busy with a"}


def test_one_node_jobs_on_different_nodes_start_together() -> None:
    queue = [
        Waiting("a", Placement(nodes=("gpu1",))),
        Waiting("b", Placement(nodes=("gpu2",))),
        Waiting("c", Placement(nodes=("gpu1",))),
    ]
    decisions = schedule(queue, views())
    assert started(decisions) == {"a": ("gpu1",), "b": ("gpu2",)}
    assert reasons(decisions) == {"c": "gpu1 busy with a"}


def test_a_node_that_serves_is_busy_and_says_with_what() -> None:
    # The daemon marks a node that serves a deployment "serves NAME" (ugro/daemon/loop.py).
    decisions = schedule(
        [Waiting("a", Placement(nodes=("gpu1",))), Waiting("b", Placement(count=1))],
        views(gpu1={"busy_with": "serves chat"}),
    )
    assert reasons(decisions) == {"a": "gpu1 serves chat"}
    assert started(decisions) == {"b": ("gpu-master",)}


def test_backfill_only_where_no_earlier_job_asks() -> None:
    # The head waits for gpu2 (busy); a later 1-node job may use gpu1, which the head does not
    # ask for, but never gpu-master, which it does.
    busy = views(gpu2={"busy_with": "exp3"})
    queue = [
        Waiting("head", Placement(nodes=("gpu-master", "gpu2"))),
        Waiting("small", Placement(nodes=("gpu1",))),
        Waiting("greedy", Placement(nodes=("gpu-master",))),
    ]
    decisions = schedule(queue, busy)
    assert started(decisions) == {"small": ("gpu1",)}
    assert reasons(decisions) == {
        "head": "gpu2 busy with exp3",
        "greedy": "gpu-master held for head, earlier in the queue",
    }


def test_a_count_takes_free_nodes_in_rank_order_and_keeps_what_it_needs() -> None:
    queue = [Waiting("two", Placement(count=2)), Waiting("one", Placement(count=1))]
    decisions = schedule(queue, views(gpu1={"busy_with": "x"}))
    assert started(decisions) == {"two": ("gpu-master", "gpu2")}
    assert reasons(decisions)["one"].startswith("needs 1, 0 free: gpu-master busy with two")
    # A count that waits holds as many nodes as it needs: nothing behind it takes them.
    queue = [Waiting("three", Placement(count=3)), Waiting("late", Placement(count=1))]
    decisions = schedule(queue, views(gpu1={"busy_with": "x"}))
    assert started(decisions) == {}
    assert reasons(decisions)["three"] == "needs 3, 2 free: gpu1 busy with x"
    assert "gpu-master held for three, earlier in the queue" in reasons(decisions)["late"]


def test_vram_unhealthy_and_paused() -> None:
    nodes = views(
        **{
            "gpu-master": {"vram_gb": 12.0},
            "gpu1": {"vram_gb": 8.0, "healthy": False, "why": "down"},
            "gpu2": {"vram_gb": 8.0},
        }
    )
    big = schedule([Waiting("big", Placement(count=1, min_vram_gb=10))], nodes)
    assert started(big) == {"big": ("gpu-master",)}
    two_big = schedule([Waiting("x", Placement(count=2, min_vram_gb=10))], nodes)
    assert reasons(two_big) == {"x": "only 1 node(s) with 10 GB per GPU in the cluster"}
    on_down = schedule([Waiting("y", Placement(nodes=("gpu1",)))], nodes)
    assert reasons(on_down) == {"y": "gpu1 down"}
    # A paused queue holds every job, whatever else it would wait for.
    held = [Waiting("z", Placement(nodes=("gpu2",))), Waiting("y", Placement(nodes=("gpu1",)))]
    paused = schedule(held, nodes, paused=True)
    assert reasons(paused) == dict.fromkeys("zy", "the queue is paused (`ugro queue --resume`)")


def test_a_sweep_is_the_grid_in_the_order_given() -> None:
    points = sweep_points(["lr=1e-4,2e-4,5e-4", "lora_r=8,16"])
    assert len(points) == 6
    assert points[0] == {"lr": "1e-4", "lora_r": "8"}
    assert points[-1] == {"lr": "5e-4", "lora_r": "16"}
    assert sweep_job_name("lr-sweep", points[1]) == "lr-sweep_lr1e-4_lora_r16"
    assert sweep_args(points[1]) == ("--lr", "1e-4", "--lora-rank", "16")
    assert sweep_args({"warmup_steps": "3"}) == ("--warmup-steps", "3")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("lr", "--sweep lr: expected KEY=V1,V2"),
        ("LR=1", "--sweep LR=1: expected KEY=V1,V2"),
        ("lr=", "--sweep lr=: expected values"),
        ("lr=1;rm -rf ~", "(not '1;rm -rf ~')"),
        ("lr=../x", "(not '../x')"),
    ],
)
def test_a_bad_sweep_is_refused_naming_it(spec: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        sweep_points([spec])
    assert message in caught.value.message


def test_placement_round_trips_and_describes_itself() -> None:
    placement = Placement(count=2, min_vram_gb=8)
    assert Placement.from_json({"nodes": [], "count": 2, "min_vram_gb": 8}) == placement
    assert placement.describe() == "2 nodes with 8 GB per GPU"
    assert Placement().describe() == "all nodes"
    assert Placement(nodes=("gpu1",)).describe() == "gpu1"
