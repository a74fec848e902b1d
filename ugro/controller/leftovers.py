"""Leftovers on nodes that were unreachable when an attempt was torn down.

A node cut off from the master may still run the job's processes. Its controller remembers it
(`pending_cleanup` in the history) and ends what is left there as soon as it answers again:
before a retry takes the node again, and after the job's end for `cleanup_window_s` at most.
"""

from __future__ import annotations

import logging
import time

from ugro.controller.context import ControllerContext

log = logging.getLogger(__name__)

LEFTOVER_PROBE_S = 5.0


def pending(ctx: ControllerContext) -> list[str]:
    """Nodes unreachable at a teardown whose leftovers have not been ended since."""
    nodes: set[str] = set(ctx.pending_cleanup)
    for line in ctx.jobs.history(ctx.job_id):
        nodes |= set(line.detail.get("pending_cleanup") or [])
        if line.event == "leftovers_cleaned":
            nodes.discard(str(line.detail.get("node")))
    return sorted(nodes)


def clean_pending(ctx: ControllerContext) -> list[str]:
    """One pass: end the job's processes on each pending node that answers now; returns the
    nodes still pending."""
    still = []
    for name in pending(ctx):
        link = ctx.link(name)
        report = link.stop(grace=ctx.options.stop_grace_s) if link.probe() else None
        if report is None or "unreachable" in report:
            still.append(name)
            continue
        ctx.jobs.note(
            ctx.job_id,
            "leftovers_cleaned",
            node=name,
            signalled=report.get("signalled"),
            left=report.get("left"),
        )
        log.info(
            "%s: %s answers again; %s leftover processes ended",
            ctx.job_id,
            name,
            report.get("signalled"),
        )
    ctx.pending_cleanup = still
    return still


def chase_leftovers(ctx: ControllerContext) -> None:
    """Kill the job's processes on nodes that were unreachable at teardown, once they answer
    (for cleanup_window_s at most)."""
    deadline = time.monotonic() + ctx.options.cleanup_window_s
    still = clean_pending(ctx)
    while still and time.monotonic() < deadline and not ctx.gone():
        ctx.publish("cleanup", f"waiting for {', '.join(still)} to kill what is left", force=True)
        time.sleep(LEFTOVER_PROBE_S)
        still = clean_pending(ctx)
    if still:
        ctx.jobs.note(ctx.job_id, "leftovers_unreached", nodes=still)
    ctx.pending_cleanup = []
