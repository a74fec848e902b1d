"""Sweeps: `ugro submit --sweep lr=1e-4,2e-4 --sweep lora_r=8,16` queues one job per point of
the grid, each named after its point and given the script options that set it."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence

from ugro.core.errors import UsageError

# A sweep's keys as train_production.py names them (any other key becomes --key-with-dashes).
SWEEP_FLAGS = {"lr": "--lr", "lora_r": "--lora-rank", "lora_rank": "--lora-rank"}
_SWEEP_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
_SWEEP_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]{0,31}")


def sweep_points(specs: Sequence[str]) -> list[dict[str, str]]:
    """`lr=1e-4,2e-4` `lora_r=8,16` -> the grid, one dict per point, in the order given."""
    axes: list[tuple[str, list[str]]] = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or not _SWEEP_KEY.fullmatch(key):
            raise UsageError(
                f"--sweep {spec}: expected KEY=V1,V2 with KEY in lower case letters, digits, '_'"
            )
        items = [v for v in values.split(",") if v]
        bad = [v for v in items if not _SWEEP_VALUE.fullmatch(v)]
        if not items or bad:
            raise UsageError(
                f"--sweep {spec}: expected values of letters, digits, '.', '+', '-' "
                f"separated by commas{f' (not {bad[0]!r})' if bad else ''}"
            )
        if key in dict(axes):
            raise UsageError(f"--sweep {key}: given twice")
        axes.append((key, items))
    return [dict(zip([k for k, _ in axes], combo, strict=True)) for combo in _grid(axes)]


def _grid(axes: list[tuple[str, list[str]]]) -> list[tuple[str, ...]]:
    return list(itertools.product(*(values for _, values in axes)))


def sweep_job_name(name: str, point: Mapping[str, str]) -> str:
    """`lr-sweep` at {lr: 1e-4, lora_r: 8} -> `lr-sweep_lr1e-4_lora_r8`."""
    return "_".join([name, *(f"{key}{value}" for key, value in point.items())])


def sweep_args(point: Mapping[str, str]) -> tuple[str, ...]:
    """The script options that set a point (later options override earlier ones)."""
    args: list[str] = []
    for key, value in point.items():
        args += [SWEEP_FLAGS.get(key, "--" + key.replace("_", "-")), value]
    return tuple(args)
