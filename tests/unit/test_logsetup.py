"""ugro's log files as cluster.yaml's logging section says (ugro.logsetup)."""

from __future__ import annotations

import logging
import logging.handlers
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import SEED_CLUSTER
from ugro.config import load_cluster_file
from ugro.core import logs as logsetup


@pytest.fixture
def clean_logging():
    before = {name: list(logging.getLogger(name).handlers) for name in ("", "ugro.health")}
    attached = set(logsetup._attached)
    yield
    for name, handlers in before.items():
        logger = logging.getLogger(name)
        for handler in logger.handlers[:]:
            if handler not in handlers:
                logger.removeHandler(handler)
                handler.close()
    logsetup._attached.clear()
    logsetup._attached.update(attached)


@pytest.mark.usefixtures("clean_logging")
def test_files_roll_over_daily_and_keep_the_days_asked(tmp_path: Path) -> None:
    cluster = load_cluster_file(SEED_CLUSTER)
    options = replace(cluster.logging, keep_days=3, level="WARNING", file=tmp_path / "ugro.log")
    cluster = replace(cluster, logging=options, paths=replace(cluster.paths, logs=tmp_path))
    logsetup.attach_cluster_logs(cluster)
    handlers = {
        Path(h.baseFilename).name: h
        for name in ("", "ugro.health.verdicts", "ugro.launch", "ugro.controller")
        for h in logging.getLogger(name).handlers
        if isinstance(h, logging.handlers.TimedRotatingFileHandler)
        and Path(h.baseFilename).parent == tmp_path
    }
    assert set(handlers) == {"ugro.log", "health.log", "launcher.log"}
    for handler in handlers.values():
        assert handler.when == "MIDNIGHT" and handler.backupCount == 3
    assert handlers["ugro.log"].level == logging.WARNING
    # The topic logs follow logging.level (never below INFO); one handler serves both loggers.
    assert handlers["launcher.log"].level == logging.WARNING
    assert handlers["launcher.log"] in logging.getLogger("ugro.controller").handlers
