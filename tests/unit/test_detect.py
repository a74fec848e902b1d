"""Judging an attempt from its nodes' heartbeats (ugro.detect), on reports written as jobctl
writes them: what failed first, when a node is lost, when a job hangs, when it is done."""

from __future__ import annotations

from typing import Any

import pytest

from ugro.controller.detect import (
    HANG_FLOOR_S,
    AttemptTracker,
    Problem,
    choose_cause,
    default_hang_timeout,
)

NODES = ["m", "w1", "w2"]


def report(
    *,
    ranks_alive: tuple[int, ...] = (),
    agent: bool = True,
    exits: dict[int, tuple[int, float]] | None = None,
    progress: dict[int, tuple[int, float]] | None = None,
    supervisor_exit: int | None = None,
    supervisor_alive: bool = True,
    held: dict[int, str] | None = None,
) -> dict[str, Any]:
    processes = (
        [{"pid": 100, "ppid": 1, "rank": None, "role": "agent", "state": "S"}] if agent else []
    )
    for rank in ranks_alive:
        state = (held or {}).get(rank, "S")
        processes.append(
            {"pid": 200 + rank, "ppid": 100, "rank": rank, "role": "rank", "state": state}
        )
    return {
        "beat": True,
        "processes": processes,
        "supervisor": {"pid": 50, "alive": supervisor_alive, "exit_code": supervisor_exit},
        "ranks": {
            str(r): {"exit_code": code, "age": age, **({"tail": ["boom"]} if code else {})}
            for r, (code, age) in (exits or {}).items()
        },
        "progress": {str(r): {"step": s, "age": age} for r, (s, age) in (progress or {}).items()},
        "agent_tail": [],
    }


def running(tracker: AttemptTracker, at: float, *, step: int = 5) -> None:
    for rank, node in enumerate(NODES):
        tracker.observe(node, report(ranks_alive=(rank,), progress={rank: (step, 0.1)}), at)


def test_a_killed_rank_is_the_cause_not_the_peers_that_died_of_it() -> None:
    tracker = AttemptTracker(NODES, pg_timeout=300)
    running(tracker, 100.0)
    # w2's rank failed on the broken collective a little before w1's kill was seen; torchrun
    # ended w1's other work with SIGTERM.
    tracker.observe("w2", report(ranks_alive=(), exits={2: (1, 0.4)}), 101.0)
    tracker.observe("w1", report(ranks_alive=()), 101.0)
    tracker.observe("m", report(ranks_alive=(), exits={0: (143, 0.2)}), 101.0)
    cause = choose_cause(tracker.problems(101.0))
    assert cause is not None
    assert (cause.kind, cause.node, cause.rank) == ("killed", "w1", 1)
    assert cause.final_state == "failed"
    assert "without an exit code" in cause.describe()


def test_a_node_that_went_silent_first_is_the_cause_of_the_exits_after_it() -> None:
    tracker = AttemptTracker(NODES, pg_timeout=300)
    running(tracker, 100.0)
    tracker.observe("m", report(ranks_alive=(), exits={0: (1, 0.0)}), 104.0)
    tracker.add_unreachable("w2", 100.0, "unreachable: no heartbeat for 11s and SSH to it failed")
    cause = choose_cause(tracker.problems(111.0))
    assert cause is not None
    assert (cause.kind, cause.node, cause.final_state) == ("unreachable", "w2", "lost")
    assert cause.as_detail()["cause"] == "unreachable"


def test_an_agent_killed_under_its_workers_is_named() -> None:
    tracker = AttemptTracker(NODES, pg_timeout=300)
    running(tracker, 100.0)
    tracker.observe("w1", report(ranks_alive=(1,), agent=False, supervisor_exit=137), 101.0)
    cause = choose_cause(tracker.problems(101.0))
    assert cause is not None and (cause.kind, cause.node) == ("agent_killed", "w1")
    assert "orphaned" in cause.detail


def test_an_exit_code_names_its_rank_with_the_log_tail() -> None:
    tracker = AttemptTracker(NODES, pg_timeout=300)
    running(tracker, 100.0)
    tracker.observe("w2", report(ranks_alive=(), exits={2: (3, 0.0)}, supervisor_exit=1), 101.0)
    cause = choose_cause(tracker.problems(101.0))
    assert cause is not None
    assert cause.as_detail() == {
        "node": "w2",
        "cause": "exit",
        "reason": "exited with code 3",
        "rank": 2,
        "exit_code": 3,
        "tail": ["boom"],
    }


def test_a_supervisor_gone_without_an_exit_code_is_lost() -> None:
    tracker = AttemptTracker(NODES, pg_timeout=300)
    running(tracker, 100.0)
    tracker.observe("w1", report(agent=False, supervisor_alive=False), 101.0)
    # Its rank vanished too; the supervisor's death is what a reboot looks like.
    kinds = {p.kind for p in tracker.problems(101.0)}
    assert "supervisor_lost" in kinds


def test_success_is_every_agent_exiting_zero_with_nothing_left() -> None:
    tracker = AttemptTracker(NODES, pg_timeout=300)
    running(tracker, 100.0)
    assert not tracker.succeeded()
    for rank, node in enumerate(NODES):
        done = report(
            agent=False, exits={rank: (0, 0.1)}, supervisor_exit=0, supervisor_alive=False
        )
        tracker.observe(node, done, 200.0)
    assert tracker.succeeded()
    assert tracker.problems(10_000.0) == []  # finished ranks never count as stalled


def test_a_stopped_rank_is_a_hang_after_the_timeout_and_named() -> None:
    tracker = AttemptTracker(NODES, pg_timeout=300, hang_timeout=15)
    running(tracker, 100.0, step=5)
    # m and w2 keep beating; w1's rank is stopped at step 5.
    for t in range(101, 120):
        tracker.observe("m", report(ranks_alive=(0,), progress={0: (t, 0.0)}), float(t))
        tracker.observe(
            "w1", report(ranks_alive=(1,), held={1: "T"}, progress={1: (5, t - 99.9)}), float(t)
        )
    assert tracker.stalled_for(114.0) == pytest.approx(14.1, abs=0.2)
    assert tracker.problems(114.0) == []
    (hang,) = tracker.problems(116.0)
    assert (hang.kind, hang.node, hang.rank) == ("hang", "w1", 1)
    assert "stopped" in hang.detail


def test_the_default_hang_timeout_follows_the_steps_within_bounds() -> None:
    assert default_hang_timeout([], 300) == 300
    assert default_hang_timeout([0.5, 0.6, 0.4], 300) == HANG_FLOOR_S
    assert default_hang_timeout([12.0, 11.0, 13.0], 300) == 120.0
    assert default_hang_timeout([100.0], 300) == 300
    tracker = AttemptTracker(NODES, pg_timeout=600)
    for step in range(1, 6):
        tracker.observe("m", report(ranks_alive=(0,), progress={0: (step, 0.0)}), 20.0 * step)
    assert tracker.current_hang_timeout() == 200.0


def test_with_torchruns_own_restarts_only_the_agent_giving_up_counts() -> None:
    tracker = AttemptTracker(NODES, pg_timeout=300, tolerate_rank_failures=True)
    running(tracker, 100.0)
    tracker.observe("w1", report(ranks_alive=()), 101.0)
    assert tracker.problems(101.0) == []
    tracker.observe("w1", report(agent=False, supervisor_exit=1, supervisor_alive=False), 130.0)
    cause = choose_cause(tracker.problems(130.0))
    assert cause is not None and cause.kind == "agent_exit"


def test_terminated_ranks_are_the_cause_only_when_nothing_else_is() -> None:
    late = Problem("terminated", "m", 10.0, rank=0, exit_code=143)
    assert choose_cause([late]) == late
    exit_later = Problem("exit", "w1", 12.0, rank=1, exit_code=1)
    assert choose_cause([late, exit_later]) == exit_later
    assert choose_cause([]) is None
