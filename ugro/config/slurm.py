"""A cluster's Slurm settings (cluster.yaml's `slurm:` and `scheduler:`), with their defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ugro.config.schema import SlurmSection
from ugro.core.cluster import Cluster


@dataclass(frozen=True)
class SlurmSettings:
    cluster_name: str
    partition: str
    job_user: str
    services: str
    install: bool
    memory_margin_mb: int
    controller_port: int
    node_port: int

    @classmethod
    def of(cls, cluster: Cluster) -> SlurmSettings:
        section = SlurmSection.model_validate(cluster.document.get("slurm") or {})
        values = section.model_dump()
        # Whom a job runs as when cluster.yaml names nobody: the user who submits it.
        values["job_user"] = section.job_user or cluster.master.user
        return cls(**values)

    def as_vars(self) -> dict[str, Any]:
        """The role's view (ugro_slurm_settings)."""
        return dict(self.__dict__)


def scheduler_of(cluster: Cluster) -> str:
    """`ugro` (UGRO starts jobs itself) or `slurm`."""
    return str(cluster.document.get("scheduler") or "ugro")
