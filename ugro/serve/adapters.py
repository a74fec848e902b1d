"""The jobs a deployment serves: each one's adapter on the master, and the base they share.

A job leaves `artifacts/adapter/` (adapter_config.json, the weights, the tokenizer with its chat
template) in its lead node's output: the master's experiment directory, or `nodes/<lead>/`
once collected. A job on an offline model (tiny-llama and its kin, built from a seed) also
leaves `artifacts/base_model/`, since its base exists nowhere else; two such jobs share a base
only if its weights are the same file, whatever the model's name.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ugro.core.cluster import Cluster
from ugro.core.errors import UsageError
from ugro.records.history import Jobs

ADAPTER = Path("artifacts") / "adapter"
OFFLINE_BASE = Path("artifacts") / "base_model"


@dataclass(frozen=True)
class Base:
    model_id: str  # its id in /v1/models: the model's name as training knew it
    directory: Path | None  # an offline base's weights on the master; None: a hub name
    identity: str  # what must match between two jobs' bases

    @property
    def hub_name(self) -> str | None:
        return None if self.directory else self.model_id


@dataclass(frozen=True)
class JobAdapter:
    model_id: str  # the job's name
    job_id: str
    directory: Path
    config: dict[str, Any]  # adapter_config.json
    base: Base
    chat_template: bool

    @property
    def rank(self) -> int:
        return int(self.config.get("r") or 0)

    @property
    def targets(self) -> list[str]:
        targets = self.config.get("target_modules") or []
        return [targets] if isinstance(targets, str) else list(targets)

    @property
    def modules_to_save(self) -> list[str]:
        return list(self.config.get("modules_to_save") or [])


def find_adapters(cluster: Cluster, refs: list[str]) -> list[JobAdapter]:
    """Each job's adapter (a name means its newest job), refused in one line when it has none."""
    jobs = Jobs(cluster)
    found: list[JobAdapter] = []
    for ref in refs:
        record = jobs.find(ref)
        if any(a.model_id == record.name for a in found):
            raise UsageError(f"{ref}: job {record.name} is named twice; each model id is unique")
        output = _output_dir(jobs.experiment_dir(record.job_id))
        if output is None:
            raise UsageError(
                f"{record.job_id} has no adapter ({ADAPTER}/adapter_config.json): it is "
                f"{record.state}; serve a job that trained to the end"
            )
        found.append(_adapter(record.name, record.job_id, output))
    return found


def common_base(adapters: list[JobAdapter]) -> Base:
    """The base every adapter was trained on; jobs on different bases are refused."""
    first = adapters[0]
    for other in adapters[1:]:
        if other.base.identity != first.base.identity:
            raise UsageError(
                f"{first.job_id} was trained on {_describe(first.base)} and {other.job_id} on "
                f"{_describe(other.base)}: one deployment serves one base"
            )
    return first.base


def _describe(base: Base) -> str:
    if base.directory is None:
        return base.model_id
    return f"{base.model_id} (weights {base.identity.split(':')[-1][:12]})"


def _output_dir(experiment: Path) -> Path | None:
    """Where the job's lead wrote its artifacts: here, or a collected worker's copy."""
    candidates = [experiment, *sorted((experiment / "nodes").glob("*"))]
    for candidate in candidates:
        if (candidate / ADAPTER / "adapter_config.json").is_file():
            return candidate
    return None


def _adapter(name: str, job_id: str, output: Path) -> JobAdapter:
    directory = output / ADAPTER
    try:
        config = json.loads((directory / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{directory}/adapter_config.json: cannot read it: {exc}") from None
    if not isinstance(config, dict):
        raise UsageError(f"{directory}/adapter_config.json: expected a JSON object")
    return JobAdapter(
        model_id=name,
        job_id=job_id,
        directory=directory,
        config=config,
        base=_base(output, config),
        chat_template=_has_chat_template(directory),
    )


def _base(output: Path, config: dict[str, Any]) -> Base:
    trained = _train_config(output)
    name = str(trained.get("model") or config.get("base_model_name_or_path") or "")
    offline = output / OFFLINE_BASE
    if offline.is_dir():
        return Base(name or "base", offline, "weights:" + _weights_digest(offline))
    if not name:
        raise UsageError(f"{output}: neither train_config.json nor the adapter names its base")
    return Base(name, None, "hub:" + name)


def _train_config(output: Path) -> dict[str, Any]:
    try:
        data = json.loads((output / "train_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _weights_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin")):
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _has_chat_template(directory: Path) -> bool:
    if (directory / "chat_template.jinja").is_file():
        return True
    try:
        config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and bool(config.get("chat_template"))
