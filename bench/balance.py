"""Unequal nodes and the network: what balanced batches and netcheck measure.

balance    on 3 nodes, the last held to a quarter of a CPU (`ugro sandbox fault NODE cpu
           --percent 25`; the others have one each), the same job and global batch, interleaved:
             equal   every rank the same micro-batch
             auto    each rank's share from its probed speed (--balance auto)
           and (full run only) each node training alone (`--nodes X`): their summed tokens/s is
           what the cluster could do at best. Tokens/s is every rank's counted tokens over the
           training seconds (`ugro results --json`), start-up left out.
network    `ugro netcheck --json` on the same nodes: each pair's stream and the all-reduce's bus
           bandwidth with every link free, then with the slow node's link rate-limited by tbf
           (`fault NODE slow --rate-kbit`), against what the limit allows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
UGRO = [sys.executable, "-m", "ugro"]
sys.path.insert(0, str(REPO))
from ugro.sandbox import faults, layout  # noqa: E402

SLOW_PERCENT = 25
RATE_KBIT = 50_000


def ugro(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*UGRO, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"ugro {' '.join(args[:3])} failed: {done.stderr[-1500:]}")
    return done


# Blocks long enough that a step's compute outweighs its fixed costs (the optimizer, the
# all-reduce's latency), as on real models: a split can only move compute.
LONG_BLOCKS = ("--max-seq-length", "256", "--batch-size", "8")


def train(config: Path, name: str, steps: int, *extra: str, job: tuple[str, ...] = ()) -> dict:
    """One job to its end; its tokens/s, and each rank's micro-batch."""
    ugro(
        config,
        "launch",
        "--name",
        name,
        *extra,
        "--",
        "--max-steps",
        str(steps),
        "--logging-steps",
        str(max(steps // 6, 1)),
        "--eval-strategy",
        "no",
        "--save-strategy",
        "no",
        *job,
    )
    results = json.loads(ugro(config, "results", name, "--json").stdout)
    plan = results.get("balance") or {}
    return {
        "tokens_per_s": results["tokens_per_s"],
        "train_s": results["train_s"],
        "micro_batches": {
            f"{r['node']}": r["micro_batch"] for r in plan.get("ranks") or [] if "node" in r
        },
    }


def one_core_each(config: Path) -> Path:
    """The cluster file with each node declaring one core (hardware.cpu_cores): its ranks run
    one thread, so three nodes on this machine's two cores share them instead of their threads
    contending (which made a throttled node look faster than its peers)."""
    data = yaml.safe_load(config.read_text())
    for node in [data["cluster"]["master"], *data["workers"]]:
        node["hardware"] = {**(node.get("hardware") or {}), "cpu_cores": 1}
    path = config.with_name(f"{config.stem}-one-core.yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def workers(config: Path) -> list[str]:
    """The workers a cluster file of the bench names, in rank order."""
    return [str(w["name"]) for w in yaml.safe_load(config.read_text())["workers"]]


def last_worker(config: Path) -> str:
    """The node the section slows down: the cluster's last worker."""
    return workers(config)[-1]


def bench_balance(box: layout.Sandbox, config: Path, reps: int, *, smoke: bool) -> dict:
    config = one_core_each(config)
    slow = last_worker(config)
    # The smoke run only shows that the section works: short steps, few of them, and no node
    # slowed (a throttled node starts its ranks several times slower).
    steps, job = (4, ()) if smoke else (60, LONG_BLOCKS)
    percent = 100 if smoke else SLOW_PERCENT
    # The launches' network preflight from the cache: checked once, before the node slows down.
    ugro(config, "netcheck", check=False)
    faults.fault(box.name, slow, "cpu", percent=percent)
    try:
        runs: dict[str, list[dict[str, Any]]] = {"equal": [], "auto": []}
        for rep in range(reps):
            for mode in runs:
                runs[mode].append(
                    train(config, f"bal-{mode}-{rep}", steps, "--balance", mode, job=job)
                )
        result: dict[str, Any] = {"slow_node": slow, "slow_percent": percent, "steps": steps}
        for mode, samples in runs.items():
            rates = sorted(s["tokens_per_s"] for s in samples)
            result[mode] = {
                "tokens_per_s": rates[len(rates) // 2],
                "samples": rates,
                "micro_batches": samples[-1]["micro_batches"],
            }
        result["auto_over_equal"] = round(
            result["auto"]["tokens_per_s"] / result["equal"]["tokens_per_s"], 3
        )
        if not smoke:
            names = [layout.MASTER_NAME, *workers(config)]
            solo = {
                name: train(config, f"solo-{name}", steps, "--nodes", name, job=job)["tokens_per_s"]
                for name in names
            }
            result["solo_tokens_per_s"] = solo
            best = sum(solo.values())
            result["auto_over_solo_sum"] = round(result["auto"]["tokens_per_s"] / best, 3)
        return result
    finally:
        faults.fault(box.name, slow, "cpu", percent=100)


def bench_network(box: layout.Sandbox, config: Path) -> dict:
    slow = last_worker(config)
    free = json.loads(ugro(config, "netcheck", "--json").stdout)
    faults.fault(box.name, slow, "slow", rate_kbit=RATE_KBIT)
    try:
        limited = json.loads(ugro(config, "netcheck", "--json", check=False).stdout)
    finally:
        faults.fault(box.name, slow, "heal")

    def figures(report: dict) -> dict[str, Any]:
        pairs = {" - ".join(p["nodes"]): p.get("mbps") for p in report["pairs"]}
        slow_pairs = [p.get("mbps") or 0 for p in report["pairs"] if slow in p["nodes"]]
        return {
            "took_s": report["took_s"],
            "pairs_mbps": pairs,
            "slow_node_best_mbps": max(slow_pairs) if slow_pairs else None,
            "busbw_gbps": report.get("busbw_gbps"),
            "latency_ms": report.get("latency_ms"),
            "findings": [f["message"] for f in report.get("findings") or []],
        }

    limit_mbps = RATE_KBIT / 1000
    result = {"limit_mbps": limit_mbps, "free": figures(free), "limited": figures(limited)}
    best = result["limited"]["slow_node_best_mbps"] or 0
    result["limited_pair_over_limit"] = round(best / limit_mbps, 3)
    busbw = result["limited"]["busbw_gbps"] or 0
    result["limited_busbw_over_limit"] = round(busbw * 8000 / limit_mbps, 3)
    return result
