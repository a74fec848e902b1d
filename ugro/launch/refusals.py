"""Whether a launch may start, once the health preflight has run on every node.

The launch role asks this once (the `ugro_launch_refusals` filter, run_once) instead of one
assert task per rule: every task costs a round of the play's hosts before the first training
step. Each refusal is a sentence naming what is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ugro.health.verdicts import find_drift

_CODE_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]*")


def launch_refusals(
    hostvars: Mapping[str, Mapping[str, Any]],
    *,
    hosts: Sequence[str],
    all_hosts: Sequence[str],
    lead: str,
    request: Mapping[str, Any],
) -> list[str]:
    """Why the job may not start (an empty list: it may).

    `hosts` are the nodes still in the play after the preflight, `all_hosts` the job's nodes,
    `lead` the job's lead node (it hosts the rendezvous), `request` the job (job_id,
    id_pattern, script, allow_drift, force, serving: {node: [deployment names]} from the
    master's records, master_addr: the lead's address, master_port, queued_by_slurm: Slurm
    starts it when its nodes are free).
    """
    refusals = []
    job_id = str(request["job_id"])
    if not re.match(str(request["id_pattern"]), job_id):
        refusals.append(f"{job_id!r} is not a job id")
    script = str(request["script"])
    if not _CODE_PATH.fullmatch(script) or ".." in script.split("/"):
        refusals.append(f"{script!r} is not a path in the job's code")
    if lead not in all_hosts:
        refusals.append(f"the lead node ({lead}) must take part: it hosts the rendezvous")
    failed = [host for host in all_hosts if host not in hosts]
    if failed:
        refusals.append(f"not launching: {', '.join(failed)} failed the preflight")
    reports = {
        host: hostvars[host]["ugro_health_report"]
        for host in hosts
        if isinstance(hostvars[host].get("ugro_health_report"), Mapping)
    }
    if not request.get("allow_drift"):
        drift = find_drift(reports, {})
        if drift:
            refusals.append(
                "not launching on drifting environments (--allow-drift to override): "
                + "; ".join(drift)
            )
    if not request.get("force"):
        busy: dict[str, list[str]] = {}
        # A job Slurm starts waits in its queue for nodes another job holds.
        for host in [] if request.get("queued_by_slurm") else hosts:
            for other in (reports.get(host, {}).get("ugro_jobs") or {}).keys() - {job_id}:
                busy.setdefault(str(other), []).append(host)
        for other, where in sorted(busy.items()):
            refusals.append(
                f"{', '.join(where)} {'runs' if len(where) == 1 else 'run'} UGRO job {other}: "
                f"`ugro stop {other}` ends it (`ugro reset` every job's processes); "
                "--force launches beside it"
            )
        serving = request.get("serving") or {}
        for host in all_hosts:
            for name in serving.get(host) or ():
                refusals.append(
                    f"{host} serves {name}: `ugro serve down {name}` ends it; "
                    "--force launches beside it"
                )
    if lead in reports and reports[lead].get("free_port") is None:
        refusals.append(
            f"no free port from {request['master_port']} up on {request['master_addr']}"
        )
    return refusals
