"""What every command shares: which cluster it runs on, loaded once, with its log files."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ugro.config import load_cluster
from ugro.core.cluster import Cluster
from ugro.core.logs import attach_cluster_logs
from ugro.nodes.runner import RunResult, run_playbook

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
        # rich, loaded by the commands that run a playbook only (the CLI imports this module).
        from ugro.display.progress import RunProgress

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
