"""What a deployment serves, as ugro wrote it into the deployment's spec.json on the node."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


class SpecError(ValueError):
    """spec.json is missing, unreadable or names something that is not there."""


@dataclass(frozen=True)
class Adapter:
    model_id: str  # the job's name: what a request's "model" names
    path: str


@dataclass(frozen=True)
class ServeSpec:
    name: str
    base_id: str  # the base model's id in /v1/models (its model name)
    base_path: str  # a directory, or a hub name
    adapters: tuple[Adapter, ...]
    host: str
    port: int
    key_file: str | None  # None: loopback, no key asked
    max_tokens_cap: int = 512
    max_batch: int = 16
    max_waiting: int = 64
    max_per_client: int = 8
    max_body_bytes: int = 1 << 20
    cache_dir: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def model_ids(self) -> list[str]:
        return [self.base_id, *(a.model_id for a in self.adapters)]


def load_spec(path: Path) -> ServeSpec:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SpecError(f"{path}: cannot read it: {exc}") from None
    try:
        adapters = tuple(Adapter(a["model_id"], a["path"]) for a in data.get("adapters", ()))
        spec = ServeSpec(
            name=data["name"],
            base_id=data["base_id"],
            base_path=data["base_path"],
            adapters=adapters,
            host=data["host"],
            port=int(data["port"]),
            key_file=data.get("key_file"),
            **{k: int(data[k]) for k in _LIMITS if k in data},
            cache_dir=data.get("cache_dir"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SpecError(f"{path}: {exc!r} is missing or invalid") from None
    if len(set(spec.model_ids)) != len(spec.model_ids):
        raise SpecError(f"{path}: model ids repeat: {', '.join(spec.model_ids)}")
    return spec


_LIMITS = ("max_tokens_cap", "max_batch", "max_waiting", "max_per_client", "max_body_bytes")
