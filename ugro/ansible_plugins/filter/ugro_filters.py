"""Filters the roles use; each wraps a function of the ugro package so both share one rule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def health_drift(hostvars: Mapping[str, Any], hosts: Sequence[str], expected: Any = None) -> list:
    from ugro.health import find_drift

    reports = {}
    for host in hosts:
        report = hostvars[host].get("ugro_health_report")
        if isinstance(report, Mapping):
            reports[host] = report
    return find_drift(reports, dict(expected or {}))


class FilterModule:
    def filters(self) -> dict:
        return {"ugro_health_drift": health_drift}
