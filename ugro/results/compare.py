"""What differs between jobs: their configurations side by side, and their results.

A job's configuration is what its experiment directory recorded: the script and the commit it
ran, its nodes and ranks, the training settings as the script resolved them (train_config.json;
else the arguments it was given), and each node's environment fingerprint (Python, torch,
CUDA, NCCL, the lock file's hash). Keys with the same value everywhere are "same"; the rest
"differ", which is what a reader of a comparison wants first.
"""

from __future__ import annotations

from typing import Any

from ugro.core.files import read_json_dict
from ugro.records.history import JobRecord, Jobs
from ugro.results.summary import job_results

# Settings that name where things were, not how the job trained.
_NOT_SETTINGS = {"output_dir", "defaults_file", "explicit", "resume", "resume_from", "cache_dir"}
_FINGERPRINT_KEYS = ("python", "torch", "cuda", "nccl", "lock_hash")
RESULT_KEYS = (
    "status",
    "steps",
    "final_loss",
    "best_loss",
    "final_eval_loss",
    "tokens_per_s",
    "train_s",
    "duration_s",
)


def configuration(jobs: Jobs, record: JobRecord) -> dict[str, Any]:
    directory = jobs.experiment_dir(record.job_id)
    config = read_json_dict(directory / "config.json")
    facts: dict[str, Any] = {
        "script": config.get("script"),
        "commit": config.get("git_commit"),
        "nodes": ",".join(config.get("nodes") or []) or None,
        "ranks": sum((config.get("ranks_per_node") or {}).values()) or None,
    }
    for key, value in ((record.detail.get("sweep") or {}).get("point") or {}).items():
        facts[f"sweep.{key}"] = value
    settings = read_json_dict(directory / "train_config.json")
    if not settings:
        settings = _arguments(config.get("args") or [])
    for key, value in sorted(settings.items()):
        if key in _NOT_SETTINGS:
            continue
        # A section of figures (train_config.json's "data") compares field by field.
        for name, item in value.items() if isinstance(value, dict) else [(None, value)]:
            label = f"train.{key}" if name is None else f"train.{key}.{name}"
            facts[label] = item if not isinstance(item, list) else ",".join(map(str, item))
    fingerprints = config.get("fingerprints") or {}
    for key in _FINGERPRINT_KEYS:
        seen = {node: (print_ or {}).get(key) for node, print_ in sorted(fingerprints.items())}
        if len(set(map(str, seen.values()))) == 1:
            facts[f"env.{key}"] = next(iter(seen.values()))
        elif seen:
            facts[f"env.{key}"] = ", ".join(f"{node}: {value}" for node, value in seen.items())
    return facts


def _arguments(args: list[str]) -> dict[str, Any]:
    """`--key value` pairs (and bare `--flag`s) of a script's command line."""
    found: dict[str, Any] = {}
    for index, arg in enumerate(args):
        if isinstance(arg, str) and arg.startswith("--"):
            following = args[index + 1] if index + 1 < len(args) else None
            takes = isinstance(following, str) and not following.startswith("--")
            found[arg[2:].replace("-", "_")] = following if takes else True
    return found


def compare(jobs: Jobs, records: list[JobRecord]) -> dict[str, Any]:
    ids = [r.job_id for r in records]
    configs = {r.job_id: configuration(jobs, r) for r in records}
    keys = list(dict.fromkeys(k for c in configs.values() for k in c))
    differs, same = {}, {}
    for key in keys:
        values = {job: configs[job].get(key) for job in ids}
        if len({repr(v) for v in values.values()}) > 1:
            differs[key] = values
        else:
            same[key] = values[ids[0]]
    results = {}
    for record in records:
        summary = job_results(jobs, record)
        results[record.job_id] = {key: summary.get(key) for key in RESULT_KEYS} | {
            "stragglers": [f"rank {s['rank']} on {s['node']}" for s in summary["stragglers"]],
        }
    return {"jobs": ids, "differs": differs, "same": same, "results": results}
