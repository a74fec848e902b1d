"""Training data as people keep it, read and checked: what format a data set is in, and each of
its examples as prompt and completion text.

Formats (`--dataset-format`, else detected from the first example's fields):
- `plain`: one corpus cut into fixed blocks (a .txt file, `builtin`, a hub data set whose only
  text is a `text` column, as UGRO trained before it took examples);
- `text`: `{"text"}` per example, trained on every token;
- `prompt-completion`: `{"prompt", "completion"}`;
- `chat`: `{"messages": [{"role", "content"}, ...]}`, rendered by the tokenizer's chat template;
- `instruction`: `{"instruction", "input", "output"}` (the Alpaca layout; `input` may be empty).
Examples come from a JSONL file (one object per line), a JSON file (a list of objects), a hub
data set, or `builtin-chat` (generated conversations). A bad example is refused in one line that
names the file and line (or the hub set and row) and what was expected.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainlib import conversations
from trainlib.errors import TrainingSetupError

PLAIN, TEXT, PROMPT, CHAT, INSTRUCTION = "plain", "text", "prompt-completion", "chat", "instruction"
FORMATS = (PLAIN, TEXT, PROMPT, CHAT, INSTRUCTION)
BUILTIN_CHAT = "builtin-chat"
RECORD_SUFFIXES = (".jsonl", ".json")
# Each format's fields, in the order detection tries them.
_FIELDS = {CHAT: ("messages",), PROMPT: ("prompt", "completion")}
_FIELDS |= {INSTRUCTION: ("instruction", "output"), TEXT: ("text",)}

_WITH_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
_WITHOUT_INPUT = "### Instruction:\n{instruction}\n\n### Response:\n"


@dataclass(frozen=True)
class Record:
    where: str  # "data.jsonl:12", "wikitext[3]": what an error names
    fields: dict[str, Any]


def is_record_source(dataset: str) -> bool:
    return dataset == BUILTIN_CHAT or Path(dataset).suffix.lower() in RECORD_SUFFIXES


def read_file_records(path: Path) -> Iterator[Record]:
    """A JSONL file's objects (blank lines skipped), or a JSON file's list of objects."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainingSetupError(f"--dataset {path}: unreadable: {exc}") from None
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TrainingSetupError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
        for index, row in enumerate(rows):
            yield _record(f"{path}[{index}]", row)
        return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TrainingSetupError(
                f"{path}:{number}: not a JSON object ({exc.msg}); a .jsonl file holds one per line"
            ) from None
        yield _record(f"{path}:{number}", row)


def _record(where: str, row: Any) -> Record:
    if not isinstance(row, dict):
        raise TrainingSetupError(f"{where}: expected a JSON object, found {type(row).__name__}")
    return Record(where, row)


def detect(first: Record) -> str:
    for kind, fields in _FIELDS.items():
        if all(f in first.fields for f in fields):
            return kind
    found = ", ".join(sorted(first.fields)) or "nothing"
    raise TrainingSetupError(
        f"{first.where}: cannot tell the data set's format: expected the fields messages, "
        f"prompt+completion, instruction+output or text; found {found} (or pass --dataset-format)"
    )


def segments(record: Record, kind: str, render) -> list[conversations.Segment]:
    """The example's text as (text, is completion) pieces; `render` is the chat template."""
    missing = [f for f in _FIELDS[kind] if f not in record.fields]
    if missing:
        raise TrainingSetupError(
            f"{record.where}: no {missing[0]!r} field (the data set's format is {kind})"
        )
    values = record.fields
    if kind == CHAT:
        turns = conversations.check_messages(values["messages"], record.where)
        try:
            return conversations.segments(turns, render)
        except TrainingSetupError:
            raise
        except Exception as exc:  # a template's own raise_exception(), or its Jinja errors
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrainingSetupError(
                f"{record.where}: the chat template refused the conversation: {first}"
            ) from None
    for field in (*_FIELDS[kind], "input"):
        value = values.get(field)
        # Only the instruction layout's `input` may be left out (or null).
        if not isinstance(value, str) and not (field == "input" and value is None):
            raise TrainingSetupError(f"{record.where}: {field}: expected a string")
    if kind == TEXT:
        return [(values["text"], True)]
    if kind == PROMPT:
        return [(values["prompt"], False), (values["completion"], True)]
    layout = _WITH_INPUT if (values.get("input") or "").strip() else _WITHOUT_INPUT
    prompt = layout.format(instruction=values["instruction"], input=values.get("input") or "")
    return [(prompt, False), (values["output"], True)]
