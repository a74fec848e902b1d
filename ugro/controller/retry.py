"""The retry rules, and the batch a retry keeps: pure functions of what the history says.

Whether an ended attempt is started again (`--retries N`): only a failed or lost one, while
retries are left, and not when retrying cannot fix it: a script that refused its options
(exit 2), one that failed before its first training step, out of memory at the same step
twice, a launch that failed (its nodes refused it), or a user's stop. The next attempt waits a
backoff that doubles each time. With `--min-nodes` it may go on without nodes that stay down,
if the lead is among the rest; train_production.py then keeps the job's global batch through
more gradient accumulation, which must come out a whole number.

ugro.controller.retrying applies them (the waiting, the probing, the start).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ugro.records.history import HistoryLine, JobRecord

# A failure that retrying cannot fix: a usage error (bad options exit 2).
USAGE_EXIT = 2


def why_not_retry(
    record: JobRecord,
    *,
    retries: int,
    stop_requested: bool,
    earlier: Sequence[HistoryLine] = (),
) -> str | None:
    """Why the job's ended attempt is not started again; None when it is. `earlier`: the job's
    history lines (for an out-of-memory failure seen before at the same step)."""
    if stop_requested:
        return "the user stopped the job"
    if record.state not in ("failed", "lost"):
        return f"the job {record.state}"
    if record.attempt > retries:
        return f"no retries left ({retries} allowed)"
    failure = record.failure
    if failure is None:
        if record.state == "failed":
            return "the launch itself failed: " + (record.reason or "")
        return None
    if failure.exit_code == USAGE_EXIT:
        return "the script refused its options (exit 2); retrying cannot fix that"
    if failure.cause in ("exit", "agent_exit") and record.last_step is None:
        return "it failed before its first training step (a script or setup error)"
    if failure.out_of_memory and any(
        line.state == "failed"
        and (line.attempt or 1) < record.attempt
        and line.failure is not None
        and line.failure.out_of_memory
        and line.detail.get("last_step") == record.last_step
        for line in earlier
    ):
        return f"out of memory at step {record.last_step} twice"
    return None


def backoff_s(ended_attempt: int, *, base_s: float, max_s: float) -> float:
    """How long before the next attempt: base, doubling with each attempt, at most max_s."""
    return float(min(base_s * 2 ** (ended_attempt - 1), max_s))


def nodes_to_retry_on(
    wanted: Sequence[str], answering: Sequence[str], *, min_nodes: int | None
) -> list[str] | None:
    """Every node the job wants once all answer; fewer (not below min_nodes) if the lead, which
    holds the job's outputs, is among them; None to keep waiting."""
    if len(answering) == len(wanted):
        return list(wanted)
    if min_nodes is not None and len(answering) >= min_nodes and wanted[0] in answering:
        return list(answering)
    return None


def keep_global_batch(
    args: tuple[str, ...], default_accum: int, world_before: int, world_after: int
) -> tuple[str, ...] | None:
    """train_production.py's arguments on fewer ranks with the same global batch: gradient
    accumulation grows by world_before / world_after. None when it cannot stay the same (the
    ratio is not a whole number)."""
    accum = default_accum
    for index, arg in enumerate(args[:-1]):
        if arg == "--grad-accum":
            accum = int(args[index + 1])
    if world_after <= 0 or (accum * world_before) % world_after:
        return None
    return (*args, "--grad-accum", str(accum * world_before // world_after))


def args_on_nodes(
    args: tuple[str, ...],
    *,
    own_script: bool,
    default_accum: int,
    ranks_per_node: Mapping[str, int],
    original: Sequence[str],
    nodes: Sequence[str],
) -> tuple[tuple[str, ...] | None, str]:
    """The next attempt's arguments on `nodes`: as they are on the job's own nodes; on fewer,
    the same global batch (train_production.py only). (None, why) when it cannot be kept."""
    if set(nodes) == set(original):
        return args, ""
    before = sum(ranks_per_node.get(n, 1) for n in original)
    after = sum(ranks_per_node.get(n, 1) for n in nodes)
    if own_script:
        return None, "only train_production.py can keep its global batch on fewer nodes"
    kept = keep_global_batch(args, default_accum, before, after)
    if kept is None:
        return None, f"cannot keep the global batch on {after} of {before} ranks"
    return kept, ""
