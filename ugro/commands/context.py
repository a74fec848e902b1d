"""What every command shares: which cluster it runs on, loaded once, with its log files."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ugro.cluster import Cluster
    from ugro.runner import RunResult

log = logging.getLogger(__name__)


class Context:
    def __init__(self, config_path: str | None = None, verbose: int = 0) -> None:
        self.config_path = config_path
        self.verbose = verbose
        self._cluster: Cluster | None = None

    def cluster(self) -> Cluster:
        """The resolved cluster (from the cache while cluster.yaml is unchanged), and the log
        files its `logging` section names."""
        if self._cluster is None:
            from ugro.config import load_cluster
            from ugro.logsetup import attach_cluster_logs

            self._cluster = load_cluster(self.config_path)
            attach_cluster_logs(self._cluster)
            log.debug("cluster %s from %s", self._cluster.name, self._cluster.describe())
        return self._cluster

    def run_playbook(
        self,
        playbook: str,
        *,
        nodes: tuple[str, ...] | list[str] = (),
        extravars: Mapping[str, Any] | None = None,
        check: bool = False,
    ) -> RunResult:
        """A playbook on the cluster (its named nodes, else all), its progress on stderr."""
        from pathlib import Path

        from ugro.display import RunProgress
        from ugro.runner import run_playbook

        cluster = self.cluster()
        names = [cluster.node(name).name for name in nodes]
        with RunProgress(Path(playbook).stem, len(names) or len(cluster.nodes)) as progress:
            return run_playbook(
                cluster,
                playbook,
                extravars=extravars,
                limit=names or None,
                check=check,
                on_event=progress,
            )
