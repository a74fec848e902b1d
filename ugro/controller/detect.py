"""What the nodes' heartbeats say about one attempt of a job: done, still fine, or what failed.

Pure bookkeeping, no I/O: the controller feeds each node's reports in (ugro.nodelink) and asks
for problems; the unit tests feed it reports they wrote. Times are the master's
`time.monotonic()`: a node's ages are subtracted from when its report arrived, so the nodes'
clocks never need to agree with the master's.

Which problem is the cause: a failure spreads (a killed rank makes its peers' collectives fail a
moment later, and torchrun ends its node's other ranks with SIGTERM), so the cause is chosen
among the problems seen within a short window of the first one, by kind before time: a node
that went silent before anything failed, then a rank killed by a signal (no exit code), an
agent killed under its workers, a rank's non-zero exit, an agent's, a hang, and last the ranks
ended by SIGTERM (143), which are always a consequence.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

# Kinds of problem, in the order they are believed as a cause.
KINDS = (
    "unreachable",
    "killed",
    "agent_killed",
    "exit",
    "agent_exit",
    "supervisor_lost",
    "hang",
    "terminated",
)
LOST_KINDS = frozenset({"unreachable", "supervisor_lost"})
TERMINATED = 143
# Problems this close after the first are candidates for its cause too.
CAUSE_WINDOW_S = 3.0
# The default hang timeout: this many median steps, within [floor, the process-group timeout].
HANG_STEPS = 10
HANG_FLOOR_S = 60.0


@dataclass(frozen=True)
class Problem:
    kind: str
    node: str
    at: float
    rank: int | None = None
    exit_code: int | None = None
    detail: str = ""
    tail: tuple[str, ...] = ()

    @property
    def final_state(self) -> str:
        return "lost" if self.kind in LOST_KINDS else "failed"

    def describe(self) -> str:
        where = self.node + (f" rank {self.rank}" if self.rank is not None else "")
        return f"{where}: {self.detail}"

    def as_detail(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"node": self.node, "cause": self.kind, "reason": self.detail}
        if self.rank is not None:
            detail["rank"] = self.rank
        if self.exit_code is not None:
            detail["exit_code"] = self.exit_code
        if self.tail:
            detail["tail"] = list(self.tail)
        return detail


def choose_cause(problems: list[Problem]) -> Problem | None:
    """The problem that came first, as the module docstring explains."""
    if not problems:
        return None
    first = (
        min(p.at for p in problems if p.kind != "terminated")
        if any(p.kind != "terminated" for p in problems)
        else min(p.at for p in problems)
    )
    candidates = [p for p in problems if p.at <= first + CAUSE_WINDOW_S]
    return min(candidates, key=lambda p: (KINDS.index(p.kind), p.at, p.rank or 0))


def default_hang_timeout(step_seconds: list[float], pg_timeout: float) -> float:
    """10x the median step, never under 60 s nor over the process-group timeout (past which
    the collectives fail by themselves)."""
    ceiling = max(pg_timeout, HANG_FLOOR_S)
    if not step_seconds:
        return ceiling
    return min(max(HANG_STEPS * statistics.median(step_seconds), HANG_FLOOR_S), ceiling)


@dataclass
class _Progress:
    step: int
    at: float


@dataclass
class AttemptTracker:
    """One attempt's view of its nodes, built from their heartbeats."""

    nodes: list[str]
    pg_timeout: float
    hang_timeout: float | None = None
    # With torchrun's own restarts (communication.max_restarts > 0) a rank's death is its
    # agent's to handle: only the agent giving up ends the attempt.
    tolerate_rank_failures: bool = False
    seen_ranks: dict[str, set[int]] = field(default_factory=dict)
    seen_agent: set[str] = field(default_factory=set)
    found: dict[tuple[str, str, int | None], Problem] = field(default_factory=dict)
    progress: dict[tuple[str, int], _Progress] = field(default_factory=dict)
    step_seconds: list[float] = field(default_factory=list)
    held: dict[tuple[str, int | None], str] = field(default_factory=dict)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)

    def observe(self, node: str, report: dict[str, Any], received: float) -> None:
        self.reports[node] = report
        processes = report.get("processes") or []
        alive = {
            int(p["rank"])
            for p in processes
            if p.get("role") == "rank" and isinstance(p.get("rank"), int)
        }
        agent_alive = any(p.get("role") == "agent" for p in processes)
        seen = self.seen_ranks.setdefault(node, set())
        seen |= alive
        exits = {int(k): v for k, v in (report.get("ranks") or {}).items()}
        for rank, info in exits.items():
            code = info.get("exit_code")
            if code:
                kind = "terminated" if code == TERMINATED else "exit"
                detail = (
                    "ended by SIGTERM (torchrun or a stop ended it)"
                    if kind == "terminated"
                    else f"exited with code {code}"
                )
                self._add(
                    Problem(
                        kind,
                        node,
                        received - float(info.get("age") or 0),
                        rank=rank,
                        exit_code=code,
                        detail=detail,
                        tail=tuple(info.get("tail") or ()),
                    )
                )
        for rank in sorted(seen - alive - set(exits)):
            self._add(
                Problem(
                    "killed",
                    node,
                    received,
                    rank=rank,
                    detail="its process ended without an exit code (killed by a signal)",
                )
            )
        if agent_alive:
            self.seen_agent.add(node)
        elif node in self.seen_agent and alive:
            self._add(
                Problem(
                    "agent_killed",
                    node,
                    received,
                    detail=f"torchrun's agent is gone; {len(alive)} of its workers were orphaned",
                )
            )
        supervisor = report.get("supervisor") or {}
        code = supervisor.get("exit_code")
        if code not in (None, 0) and not any(
            k[0] == node and k[1] in ("exit", "killed", "terminated") for k in self.found
        ):
            self._add(
                Problem(
                    "agent_exit",
                    node,
                    received,
                    exit_code=code,
                    detail=f"torchrun's agent exited with code {code}",
                    tail=tuple(report.get("agent_tail") or ()),
                )
            )
        if (
            supervisor.get("pid") is not None
            and not supervisor.get("alive")
            and code is None
            and not processes
        ):
            self._add(
                Problem(
                    "supervisor_lost",
                    node,
                    received,
                    detail="the job's supervisor died without an exit code",
                )
            )
        self.held = {key: letter for key, letter in self.held.items() if key[0] != node}
        for process in processes:
            if process.get("state") in ("T", "t", "D"):
                self.held[(node, process.get("rank"))] = process["state"]
        for rank_key, beat in (report.get("progress") or {}).items():
            rank = int(rank_key)
            step, at = int(beat["step"]), received - float(beat.get("age") or 0)
            before = self.progress.get((node, rank))
            if before is None or step > before.step:
                if before is not None and at > before.at:
                    self.step_seconds.append((at - before.at) / (step - before.step))
                    del self.step_seconds[:-200]
                self.progress[(node, rank)] = _Progress(step, at)

    def _add(self, problem: Problem) -> None:
        if self.tolerate_rank_failures and problem.kind in ("exit", "killed", "terminated"):
            return
        key = (problem.node, problem.kind, problem.rank)
        if key not in self.found:
            self.found[key] = problem

    def add_unreachable(self, node: str, last_heard: float, why: str) -> None:
        self._add(Problem("unreachable", node, last_heard, detail=why))

    # -- questions ------------------------------------------------------------------------------
    def succeeded(self) -> bool:
        """Every node's agent exited 0 and left nothing running."""
        for node in self.nodes:
            report = self.reports.get(node)
            if report is None:
                return False
            if (report.get("supervisor") or {}).get("exit_code") != 0 or report.get("processes"):
                return False
        return True

    def started(self) -> bool:
        """Whether a node has reported its supervisor (a Slurm job's start when Slurm runs it)."""
        return any(
            (report.get("supervisor") or {}).get("pid") is not None
            for report in self.reports.values()
        )

    def steps(self) -> dict[str, int]:
        return {f"{node}/{rank}": p.step for (node, rank), p in sorted(self.progress.items())}

    def current_hang_timeout(self) -> float:
        if self.hang_timeout is not None:
            return self.hang_timeout
        return default_hang_timeout(self.step_seconds, self.pg_timeout)

    def _running_progress(self) -> dict[tuple[str, int], _Progress]:
        """The progress of ranks that have not exited (a finished rank stops beating)."""
        exited = {
            (node, int(rank))
            for node, report in self.reports.items()
            for rank in (report.get("ranks") or {})
        }
        return {key: p for key, p in self.progress.items() if key not in exited}

    def stalled_for(self, now: float) -> float | None:
        """Seconds since the most stalled running rank last completed a step (None before
        the first step): one stopped rank is a hang even while the others still beat."""
        running = self._running_progress()
        if not running:
            return None
        return max(0.0, now - min(p.at for p in running.values()))

    def problems(self, now: float) -> list[Problem]:
        found = list(self.found.values())
        stalled = self.stalled_for(now)
        if stalled is not None and stalled > self.current_hang_timeout() and not self.succeeded():
            found.append(self._hang(now, stalled))
        return found

    def _hang(self, now: float, stalled: float) -> Problem:
        for (node, rank), letter in sorted(
            self.held.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)
        ):
            what = (
                "stopped (SIGSTOP or a debugger)"
                if letter in ("T", "t")
                else ("in uninterruptible sleep (a stuck device or file system)")
            )
            return Problem(
                "hang",
                node,
                now - stalled,
                rank=rank,
                detail=f"no training step for {stalled:.0f}s; a process of it is {what}",
            )
        (node, rank), laggard = min(
            self._running_progress().items(), key=lambda kv: (kv[1].at, kv[1].step)
        )
        return Problem(
            "hang",
            node,
            now - stalled,
            rank=rank,
            detail=(
                f"no training step for {stalled:.0f}s (hang timeout "
                f"{self.current_hang_timeout():.0f}s); last step {laggard.step}"
            ),
        )
