"""A job's config.json: what it is, where it runs, from which code and cluster, and what each
attempt ran. The launch writes it (ugro.launch.definition.job_config), each attempt adds its
commands, pids and environments (ugro.launch.attempt); the controller, `ugro compare` and the
stop and collect playbooks read it.

Keys this release does not know (a later release's, a user's) are kept as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class JobConfig:
    job_id: str
    name: str
    created_at: str = ""
    nodes: tuple[str, ...] = ()  # in rank order: the first leads
    script: str = ""
    args: tuple[str, ...] = ()
    allow_drift: bool = False
    balance: str = "equal"
    git_commit: str | None = None
    cluster: Mapping[str, Any] = field(default_factory=dict)  # the validated cluster.yaml
    cluster_file: str | None = None
    # Queued jobs: the nodes asked for; jobs of a sweep: its name, point and index.
    placement: Mapping[str, Any] | None = None
    sweep: Mapping[str, Any] | None = None
    # What the last attempt's launch ran on each node, and found there.
    commands: Mapping[str, list[str]] = field(default_factory=dict)
    pids: Mapping[str, int] = field(default_factory=dict)
    rendezvous_port: int | None = None
    fingerprints: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    launch_run: str | None = None
    # The job as it began (what a retry on fewer nodes keeps its global batch against), and
    # each later attempt's nodes and arguments.
    ranks_per_node: Mapping[str, int] = field(default_factory=dict)
    attempts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    other: Mapping[str, Any] = field(default_factory=dict)  # keys this release does not know

    @classmethod
    def from_json(cls, data: Mapping[str, Any], job_id: str = "") -> JobConfig:
        """Any config.json this or an earlier release wrote (an empty or foreign one gives the
        defaults, named after `job_id`)."""
        known = {f.name for f in fields(cls)} - {"other"}

        def mapping(key: str) -> dict[str, Any]:
            value = data.get(key)
            return dict(value) if isinstance(value, Mapping) else {}

        def text(key: str) -> str | None:
            value = data.get(key)
            return str(value) if value is not None else None

        port = data.get("rendezvous_port")
        return cls(
            job_id=str(data.get("job_id") or job_id),
            name=str(data.get("name") or ""),
            created_at=str(data.get("created_at") or ""),
            nodes=tuple(str(n) for n in data.get("nodes") or ()),
            script=str(data.get("script") or ""),
            args=tuple(str(a) for a in data.get("args") or ()),
            allow_drift=bool(data.get("allow_drift")),
            balance=str(data.get("balance") or "equal"),
            git_commit=text("git_commit"),
            cluster=mapping("cluster"),
            cluster_file=text("cluster_file"),
            placement=mapping("placement") if "placement" in data else None,
            sweep=mapping("sweep") if "sweep" in data else None,
            commands={str(k): [str(a) for a in v] for k, v in mapping("commands").items()},
            pids={str(k): int(v) for k, v in mapping("pids").items() if isinstance(v, int)},
            rendezvous_port=port if isinstance(port, int) else None,
            fingerprints=mapping("fingerprints"),
            launch_run=text("launch_run"),
            ranks_per_node={
                str(k): int(v) for k, v in mapping("ranks_per_node").items() if isinstance(v, int)
            },
            attempts=mapping("attempts"),
            other={k: v for k, v in data.items() if k not in known},
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "job_id": self.job_id,
            "name": self.name,
            "created_at": self.created_at,
            "nodes": list(self.nodes),
            "script": self.script,
            "args": list(self.args),
            "allow_drift": self.allow_drift,
            "balance": self.balance,
            "git_commit": self.git_commit,
            "cluster": dict(self.cluster),
            "cluster_file": self.cluster_file,
        }
        for key in ("placement", "sweep"):
            if getattr(self, key) is not None:
                data[key] = dict(getattr(self, key))
        if self.launch_run is not None:  # an attempt's launch ran
            data.update(
                commands={k: list(v) for k, v in self.commands.items()},
                pids=dict(self.pids),
                rendezvous_port=self.rendezvous_port,
                fingerprints={k: dict(v) for k, v in self.fingerprints.items()},
                launch_run=self.launch_run,
            )
        if self.ranks_per_node:
            data["ranks_per_node"] = dict(self.ranks_per_node)
        if self.attempts:
            data["attempts"] = {k: dict(v) for k, v in self.attempts.items()}
        return data | dict(self.other)

    def with_attempt(self, attempt: int, nodes: list[str], args: tuple[str, ...]) -> JobConfig:
        """Attempt n's nodes and arguments recorded beside the first's (n > 1)."""
        attempts = {**self.attempts, str(attempt): {"nodes": nodes, "args": list(args)}}
        return replace(self, attempts=attempts)
