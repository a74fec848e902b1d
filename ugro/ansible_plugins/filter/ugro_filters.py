"""Filters the roles use; each wraps a function of the ugro package so both share one rule.

ugro is imported inside each filter: Ansible loads this file for every play, and most plays use
one filter or none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError


def health_drift(
    hostvars: Mapping[str, Any], hosts: Sequence[str], expected: Any = None
) -> list[str]:
    """Warnings for versions that differ across the hosts' health reports (ugro.health)."""
    from ugro.health.verdicts import find_drift

    reports = {}
    for host in hosts:
        report = hostvars[host].get("ugro_health_report")
        if isinstance(report, Mapping):
            reports[host] = report
    return find_drift(reports, dict(expected or {}))


def launch_plan(report: Mapping[str, Any], request: Mapping[str, Any]) -> dict[str, Any]:
    """A node's part of a job and its torchrun command (ugro.launch.torchrun.node_plan)."""
    from ugro.launch.torchrun import node_plan

    try:
        return node_plan(dict(report), dict(request))
    except (KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"ugro_launch_plan: {type(exc).__name__}: {exc}") from exc


def launch_refusals(
    hostvars: Mapping[str, Any],
    hosts: Sequence[str],
    all_hosts: Sequence[str],
    lead: str,
    request: Mapping[str, Any],
) -> list[str]:
    """Why a launch may not start (ugro.launch.refusals.launch_refusals)."""
    from ugro.launch.refusals import launch_refusals as refusals

    return refusals(
        hostvars, hosts=list(hosts), all_hosts=list(all_hosts), lead=lead, request=request
    )


def sync_preview(lines: Sequence[str], manifest: Sequence[str]) -> dict[str, Any]:
    """What shipping scripts/ ships and would destroy (ugro.nodes.sync_preview)."""
    from ugro.nodes.sync_preview import scripts_preview

    return scripts_preview(list(lines), list(manifest or []))


def node_script(program: str) -> str:
    """A node-side program as one script for `python -`, its helpers inlined
    (ugro.nodes.scripts): `'jobctl' | ugro_node_script`."""
    from ugro.nodes.scripts import PROGRAMS, script

    if program not in PROGRAMS:
        raise AnsibleFilterError(f"ugro_node_script: no node program {program!r}")
    return script(PROGRAMS[program])


def slurm_files(
    hostvars: Mapping[str, Any],
    hosts: Sequence[str],
    controller: str,
    settings: Mapping[str, Any],
) -> dict[str, str]:
    """slurm.conf and gres.conf from each host's `ugro_slurm_node` fact (ugro.slurm.conf)."""
    from ugro.slurm.conf import files_from_facts

    try:
        return files_from_facts(
            {host: hostvars[host]["ugro_slurm_node"] for host in {*hosts, controller}},
            {host: str(hostvars[host]["ugro_address"]) for host in {*hosts, controller}},
            hosts=list(hosts),
            controller=controller,
            settings=settings,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"ugro_slurm_files: {type(exc).__name__}: {exc}") from exc


def slurm_uid_problems(
    hostvars: Mapping[str, Any], hosts: Sequence[str], user: str, reference: str
) -> list[str]:
    """Nodes where the job user is missing or has another UID (ugro.slurm.users)."""
    from ugro.slurm.users import uid_problems

    entries = {host: hostvars[host].get("ugro_slurm_passwd") for host in hosts}
    return uid_problems(user, entries, reference)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "ugro_health_drift": health_drift,
            "ugro_launch_plan": launch_plan,
            "ugro_launch_refusals": launch_refusals,
            "ugro_node_script": node_script,
            "ugro_slurm_files": slurm_files,
            "ugro_slurm_uid_problems": slurm_uid_problems,
            "ugro_sync_preview": sync_preview,
        }
