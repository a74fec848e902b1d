"""Changing cluster.yaml as a person would: one node's lines added or taken away, every other
byte (comments, order, quoting, indentation) as it was.

The YAML parser says where each node of the document starts and ends (its marks); the edit is
made on the text at those places, never by dumping the document again, which would rewrite
the person's indentation and spacing (a round-trip library such as ruamel.yaml still does).
Each edit is checked twice before the file is replaced: the new text must parse to the old
data with exactly that change, and UGRO's own loader must accept it, so an edit never leaves a
cluster.yaml that UGRO would refuse. The file is replaced whole (a temporary beside it).
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from ugro.core.errors import ConfigError

_DEFAULT_INDENT = 2


def add_worker(text: str, worker: Mapping[str, Any]) -> str:
    """`text` with `worker` appended to its `workers:` list (the list made when there is none),
    written in the indentation of the workers already there."""
    root = _compose(text)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    value = _top_level(root, "workers")
    indent = _nested_indent(root)
    if value is None or _is_null(value):
        block = _render(worker, dash=indent, key=indent + 2, indent=indent)
        if value is None:
            new = "".join(lines) + "workers:\n" + block
        else:  # `workers:` with nothing after it
            new = _insert(lines, _key_line(root, "workers") + 1, block)
    elif isinstance(value, yaml.SequenceNode) and value.flow_style:
        if value.value:
            raise ConfigError(
                "cluster.yaml: `workers` is written as a flow list ([...]); write it as a "
                "block list (one `- name: ...` per node) for ugro to add to it"
            )
        # `workers: []`: the brackets go, the block follows the key's line.
        start, end = value.start_mark.index, value.end_mark.index
        flat = "".join(lines)
        before = flat[:start].rstrip(" ")
        rest = flat[end:]
        line_end = rest.find("\n") + 1
        new = (
            before
            + rest[:line_end]
            + _render(worker, dash=indent, key=indent + 2, indent=indent)
            + rest[line_end:]
        )
    elif isinstance(value, yaml.SequenceNode):
        first = value.value[0]
        key_column = first.start_mark.column
        dash_column = _dash_column(lines, first)
        block = _render(worker, dash=dash_column, key=key_column, indent=indent)
        new = _insert(lines, _last_line(value.value[-1]) + 1, block)
    else:
        raise ConfigError("cluster.yaml: `workers` must be a list of nodes")

    def expected(data: dict[str, Any]) -> None:
        data["workers"] = [*(data.get("workers") or []), dict(worker)]

    _check(text, new, expected)
    return new


def remove_worker(text: str, name: str) -> str:
    """`text` without the worker `name` (its lines and the comment lines right above them), the
    ranks above its own moved down by one: ranks stay 0..N-1, the master at 0."""
    root = _compose(text)
    value = _top_level(root, "workers")
    items = value.value if isinstance(value, yaml.SequenceNode) else []
    index = next((i for i, item in enumerate(items) if _scalar(item, "name") == name), None)
    if value is None or index is None:
        raise ConfigError(f"cluster.yaml: no worker named {name!r}")
    gone = _scalar(items[index], "rank")
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement) on the whole text
    for item in items:
        rank = _scalar_node(item, "rank")
        if rank is not None and gone is not None and item is not items[index]:
            number = int(rank.value) if rank.value.isdigit() else None
            if number is not None and number > int(gone):
                edits.append((rank.start_mark.index, rank.end_mark.index, str(number - 1)))
    lines = text.splitlines(keepends=True)
    first = items[index].start_mark.line
    floor = _last_line(items[index - 1]) + 1 if index > 0 else _key_line(root, "workers") + 1
    while first - 1 >= floor and lines[first - 1].lstrip().startswith("#"):
        first -= 1
    last = _last_line(items[index])
    offsets = _line_offsets(lines)
    edits.append((offsets[first], offsets[last + 1], ""))
    if len(items) == 1:  # the list is empty now: say so, rather than leave a null
        key_line = _key_line(root, "workers")
        end = offsets[key_line] + len(lines[key_line].rstrip("\r\n"))
        edits.append((end, end, " []"))
    new = text
    for start, end, replacement in sorted(edits, reverse=True):
        new = new[:start] + replacement + new[end:]

    def expected(data: dict[str, Any]) -> None:
        workers = data["workers"]
        removed = workers.pop(index)
        for worker in workers:
            if isinstance(worker.get("rank"), int) and worker["rank"] > removed.get("rank", 0):
                worker["rank"] -= 1

    _check(text, new, expected)
    return new


def replace_checked(path: Path, text: str, *, backup: bool = False) -> None:
    """Write `text` over `path` once UGRO's own loader accepts it; with `backup`, the old file
    is kept beside it as `<name>.bak` first. A refused text leaves the file untouched."""
    # Loading brings pydantic: only here, where a file is really edited.
    from ugro.config.load import load_cluster_file

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".yaml")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        try:
            load_cluster_file(Path(temporary))
        except ConfigError as exc:
            raise ConfigError(
                f"{path}: the change was refused and the file is unchanged: "
                + exc.message.replace(temporary, path.name)
            ) from None
        os.chmod(temporary, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        if backup and path.exists():
            path.with_name(path.name + ".bak").write_bytes(path.read_bytes())
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


# --- Where things are in the text ---------------------------------------------------------------


def _compose(text: str) -> yaml.MappingNode:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"cluster.yaml: not valid YAML ({exc})") from None
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError("cluster.yaml: the file must be a mapping with a 'cluster' section")
    return root


def _top_level(root: yaml.MappingNode, key: str) -> yaml.Node | None:
    return next((v for k, v in root.value if k.value == key), None)


def _key_line(root: yaml.MappingNode, key: str) -> int:
    return int(next(k.start_mark.line for k, _ in root.value if k.value == key))


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")


def _scalar_node(item: yaml.Node, key: str) -> yaml.ScalarNode | None:
    if isinstance(item, yaml.MappingNode):
        for k, v in item.value:
            if k.value == key and isinstance(v, yaml.ScalarNode):
                return v
    return None


def _scalar(item: yaml.Node, key: str) -> str | None:
    node = _scalar_node(item, key)
    return node.value if node is not None else None


def _descendants(node: yaml.Node) -> Iterator[yaml.Node]:
    yield node
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from _descendants(key)
            yield from _descendants(value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _descendants(item)


def _last_line(node: yaml.Node) -> int:
    """The line a node's own text ends on. A block collection's end mark lies at the next
    token (past blank lines and comments); a scalar's and a flow collection's are exact."""
    ends = [
        n.end_mark
        for n in _descendants(node)
        if isinstance(n, yaml.ScalarNode) or getattr(n, "flow_style", False)
    ]
    # A scalar ending a line has its end mark at the line's end, or at the next line's start.
    return max((m.line - 1 if m.column == 0 and m.line > 0 else m.line) for m in ends)


def _dash_column(lines: list[str], item: yaml.Node) -> int:
    line = lines[item.start_mark.line]
    dash = line.rfind("-", 0, item.start_mark.column)
    return dash if dash >= 0 else max(0, item.start_mark.column - 2)


def _nested_indent(root: yaml.MappingNode) -> int:
    """How far the person indents a mapping under its key (cluster: -> master:)."""
    cluster = _top_level(root, "cluster")
    if isinstance(cluster, yaml.MappingNode) and cluster.value and not cluster.flow_style:
        return int(cluster.value[0][0].start_mark.column) or _DEFAULT_INDENT
    return _DEFAULT_INDENT


def _line_offsets(lines: list[str]) -> list[int]:
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    return offsets


def _insert(lines: list[str], at: int, block: str) -> str:
    return "".join(lines[:at]) + block + "".join(lines[at:])


def _render(worker: Mapping[str, Any], *, dash: int, key: int, indent: int) -> str:
    """One list item in block style: `- ` at the dash's column, its keys at `key`."""
    body = yaml.safe_dump(
        dict(worker), sort_keys=False, default_flow_style=False, indent=indent, width=4096
    ).splitlines()
    first = " " * dash + "-" + " " * max(1, key - dash - 1) + body[0]
    return "".join(line + "\n" for line in [first, *(" " * key + rest for rest in body[1:])])


def _check(old: str, new: str, change: Any) -> None:
    """The new text parses to the old data with `change` made, and nothing else."""
    expected = copy.deepcopy(yaml.safe_load(old))
    change(expected)
    try:
        if yaml.safe_load(new) == expected:
            return
    except yaml.YAMLError:
        pass
    raise ConfigError(
        "cluster.yaml: this file's layout defeated a safe edit; nothing was written "
        "(add the node's lines by hand, or rewrite `workers` as a plain block list)"
    )
