"""The error types. The CLI catches UgroError once and prints only its message."""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # the command ran and found something wrong (an unhealthy node, a failed run)
    USAGE = 2  # bad input: configuration, arguments, missing prerequisites


class UgroError(Exception):
    """An error with a message meant for the user, and the exit code that goes with it."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(UgroError):
    """cluster.yaml (or another input file) is missing, unreadable or invalid."""

    exit_code = ExitCode.USAGE


def unknown_node(where: str, name: str, known: list[str]) -> ConfigError:
    return ConfigError(f"{where}: no node named {name!r}; the nodes are: {', '.join(known)}")


class UsageError(UgroError):
    """The command line asks for something that cannot be done as asked."""

    exit_code = ExitCode.USAGE


class PrerequisiteError(UgroError):
    """Something this machine lacks (a binary, root) that the command needs."""

    exit_code = ExitCode.USAGE


class RunError(UgroError):
    """An Ansible run that did not end as `successful`."""

    def __init__(self, message: str, *, status: str, rc: int, artifact_dir: Path | None) -> None:
        super().__init__(message)
        self.status = status
        self.rc = rc
        self.artifact_dir = artifact_dir


class SandboxError(UgroError):
    """The sandbox could not be brought up, changed or torn down."""
