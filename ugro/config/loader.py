"""Reading cluster.yaml: YAML with line numbers, ${VAR} expansion, and one-line errors.

`read_config(path)` returns the validated schema (`ugro.config.schema.ClusterConfig`); every
mistake becomes a ConfigError naming the file, the line and the field:
`cluster.yaml:12: workers[0].rank: 1 is already used by gpu1; ranks must be unique`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ugro.config.schema import ClusterConfig, semantic_problems
from ugro.config.source import ENV_REFERENCE, current_user
from ugro.core.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20
# A composed YAML graph bigger than this is an alias bomb, not a cluster description.
MAX_YAML_NODES = 50_000


def read_config(path: Path) -> ClusterConfig:
    text = _read_text(path)
    root = _compose(path, text)
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}:1: the file must be a mapping with a 'cluster' section, "
            f"not {type(data).__name__}"
        )
    lines = _LineFinder(root)
    data = _expand_env(path, lines, data, ())
    try:
        config = ClusterConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(path, lines, exc)) from None
    problems = list(semantic_problems(config))
    if problems:
        loc, message = problems[0]
        raise ConfigError(f"{path}:{lines.line(loc)}: {_dotted(loc)}: {message}")
    return config


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {size} bytes is too large for a cluster file (limit 1 MiB)")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; expected a cluster.yaml") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; expected a cluster.yaml file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied; the file must be readable") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _compose(path: Path, text: str) -> yaml.Node | None:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = exc.problem or "invalid YAML"
        raise ConfigError(f"{path}:{line}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {exc}") from None
    _check_graph(path, root)
    return root


def _check_graph(path: Path, root: yaml.Node | None) -> None:
    """Refuse duplicate keys (YAML silently keeps the last) and alias bombs."""
    visited = 0
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        visited += 1
        if visited > MAX_YAML_NODES:
            raise ConfigError(
                f"{path}: the YAML expands to more than {MAX_YAML_NODES} nodes "
                "(nested aliases?); a cluster file is far smaller"
            )
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        raise ConfigError(
                            f"{path}:{key.start_mark.line + 1}: duplicate key {key.value!r} "
                            f"(first at line {seen[key.value]}); each key may appear once"
                        )
                    seen[key.value] = key.start_mark.line + 1
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


class _LineFinder:
    """Maps a field location such as ('workers', 1, 'rank') to its line in the file."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root

    def line(self, loc: Sequence[str | int], *, key: bool = False) -> int:
        node = self.root
        line = 1 if node is None else node.start_mark.line + 1
        for part in loc:
            child = self._child(node, part)
            if child is None:
                break
            key_node, value_node = child
            node = value_node
            line = (key_node if key else value_node).start_mark.line + 1
        return line

    @staticmethod
    def _child(node: yaml.Node | None, part: str | int) -> tuple[yaml.Node, yaml.Node] | None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                    return key_node, value_node
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            return node.value[part], node.value[part]
        return None


def _expand_env(path: Path, lines: _LineFinder, value: Any, loc: tuple[str | int, ...]) -> Any:
    """Expand ${VAR} in every string; an unset variable is an error naming the field."""
    if isinstance(value, dict):
        return {k: _expand_env(path, lines, v, (*loc, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(path, lines, v, (*loc, i)) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ and name in _PROCESS_VARIABLES:
                # Shells set these, but cron, CI and `sudo -i` may not: the process knows them.
                return _PROCESS_VARIABLES[name]()
            if name not in os.environ:
                raise ConfigError(
                    f"{path}:{lines.line(loc)}: {_dotted(loc)}: environment variable {name} "
                    "is not set; set it or write the value itself"
                )
            return os.environ[name]

        return ENV_REFERENCE.sub(substitute, value)
    return value


def _home() -> str:
    return str(Path.home())


_PROCESS_VARIABLES: dict[str, Callable[[], str]] = {
    "USER": current_user,
    "LOGNAME": current_user,
    "HOME": _home,
}


def _dotted(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def _format_validation_error(path: Path, lines: _LineFinder, exc: ValidationError) -> str:
    errors = exc.errors()
    # An unknown key is often a misspelt required one: name it first, it explains the rest.
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(p for p in error["loc"] if not isinstance(p, str) or not p.startswith("function-"))
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = f"; expected one of: {', '.join(allowed)}" if allowed else ""
        return f"{path}:{lines.line(loc, key=True)}: {_dotted(loc)}: unknown key{hint}"
    if kind == "missing":
        return f"{path}:{lines.line(loc[:-1], key=True)}: {_dotted(loc)}: required but missing"
    message = error["msg"].removeprefix("Value error, ")
    if kind != "value_error" and "input" in error and not isinstance(error["input"], dict | list):
        message = f"{message} (got {error['input']!r})"
    return f"{path}:{lines.line(loc)}: {_dotted(loc)}: {message}"


def _allowed_keys(loc: Sequence[str | int]) -> list[str]:
    """The keys the schema accepts at a location, for the 'unknown key' hint."""
    model: Any = ClusterConfig
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if info is None:
            return []
        annotation = info.annotation
        args = getattr(annotation, "__args__", ())
        model = next((a for a in (annotation, *args) if isinstance(a, type)), None)
        if model is list and args:
            model = args[0]
        if model is None or not hasattr(model, "model_fields"):
            return []
    return list(model.model_fields) if hasattr(model, "model_fields") else []
