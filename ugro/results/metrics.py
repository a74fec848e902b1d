"""A job's training curves as ugro reads them, whatever wrote them.

train_production.py writes metrics.jsonl: one line per log event, each train line with every
rank's figures (scripts/trainlib/rankclock.py). Any other script (an HF Trainer with
`report_to="tensorboard"`, Lightning's TensorBoard logger, plain `SummaryWriter` code) writes
TensorBoard event files somewhere under UGRO_OUTPUT_DIR; those are read by tag, so that its
job has the same steps, losses and learning rate in `ugro results`, `plot` and `compare`.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ugro.core.files import JsonLines

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TELEMETRY_GLOB = "*.telemetry.jsonl"  # in the job's logs/, one per node (scripts/ugro_telemetry.py)
EVENTS_GLOB = "events.out.tfevents.*"

# TensorBoard tags as the common trainers name them (compared lowercased): the HF Trainer
# (`train/loss`, `eval/loss`, `train/learning_rate`), Lightning (`train_loss`, `val_loss`,
# `lr-AdamW`), and what people write by hand (`Loss/train`).
TRAIN_LOSS_TAGS = ("train/loss", "train_loss", "train_loss_step", "loss/train", "loss")
EVAL_LOSS_TAGS = (
    "eval/loss",
    "eval_loss",
    "val_loss",
    "val/loss",
    "loss/eval",
    "loss/val",
    "validation_loss",
)
LEARNING_RATE_TAGS = ("train/learning_rate", "learning_rate", "lr", "train/lr")
TOKENS_PER_S_TAGS = ("train/tokens_per_s",)

# A rank whose own step time (waiting for its peers left out) exceeds the median's by this much.
STRAGGLER_RATIO = 1.2


@dataclass
class Curves:
    """The job's train and eval points, in step order, and where they came from."""

    source: str  # METRICS_FILE, "tensorboard", or "none"
    train: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    last_step: int = 0  # the highest step any record names (the last log may come before it)


def read_jsonl(path: Path, *, cached: bool = False) -> list[dict[str, Any]]:
    """The file's JSON objects, in order (a torn last line, being written, is left out).

    cached: keep what was read and read only what was appended since (a long-running reader,
    the dashboard, polling a growing file); the list returned is shared: do not change it."""
    if cached:
        return _READERS.setdefault(path, _AppendedLines(path)).read()
    return list(JsonLines(path).new_records())


class _AppendedLines:
    """Every record of a growing file, read once: JsonLines' new records, kept."""

    def __init__(self, path: Path) -> None:
        self.lines = JsonLines(path)
        self.records: list[dict[str, Any]] = []

    @property
    def inode(self) -> int | None:
        return self.lines.inode

    def read(self) -> list[dict[str, Any]]:
        fresh = list(self.lines.new_records())
        if self.lines.restarted:
            self.records = []
        self.records.extend(fresh)
        return self.records


_READERS: dict[Path, _AppendedLines] = {}


def load_curves(directory: Path, *, cached: bool = False) -> Curves:
    """metrics.jsonl where the job has one, else its TensorBoard event files, else nothing.

    cached: sorted into curves once, and afterwards only what the file gained (a page polling
    a long run asks often); the Curves returned is shared: do not change it."""
    path = directory / METRICS_FILE
    records = read_jsonl(path, cached=cached)
    if records:
        if not cached:
            return _sorted_into(Curves(source=METRICS_FILE), records)
        inode = _READERS[path].inode
        curves, seen, known = _CURVES.get(path, (Curves(source=METRICS_FILE), 0, inode))
        if known != inode or seen > len(records):  # the file was rewritten: start again
            curves, seen = Curves(source=METRICS_FILE), 0
        _CURVES[path] = (_sorted_into(curves, records[seen:]), len(records), inode)
        return curves
    events = sorted(directory.rglob(EVENTS_GLOB))
    if events:
        return curves_from_events(events)
    return Curves(source="none")


def _sorted_into(curves: Curves, records: list[dict[str, Any]]) -> Curves:
    for record in records:
        if not _checked(record):
            continue
        if record.get("kind", "train") == "train" and "loss" in record:
            curves.train.append(record)
        if "eval_loss" in record:
            curves.evals.append(record)
        curves.last_step = max(curves.last_step, record["step"])
    return curves


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Keys whose values the readers compute with: a line whose value is not a number loses the key
# (a script of the user's own may write a metrics.jsonl of another shape), never the reader.
_NUMBERS = ("loss", "eval_loss", "learning_rate", "grad_norm", "tokens_per_s", "train_s", "tokens")
_RANK_NUMBERS = ("steps", "train_s", "step_time_s", "sync_s", "data_s", "tokens", "peak_memory_mb")


def _checked(record: dict[str, Any]) -> bool:
    """Whether `record` is a metrics line at a step (an int); its numbers made safe in place."""
    step = record.get("step")
    if not isinstance(step, int) or isinstance(step, bool):
        return False
    for key in _NUMBERS:
        if key in record and not is_number(record[key]):
            del record[key]
    ranks = record.get("ranks")
    if ranks is not None:
        record["ranks"] = [
            {
                **{k: v for k, v in r.items() if k not in _RANK_NUMBERS or is_number(v)},
                "node": str(r.get("node") or "?"),
            }
            for r in (ranks if isinstance(ranks, list) else [])
            if isinstance(r, dict) and isinstance(r.get("rank"), int)
        ]
    return True


def _clean_sample(sample: dict[str, Any]) -> bool:
    """Whether a telemetry line has its time; values that are not numbers are dropped."""
    if not is_number(sample.get("t")):
        return False
    for key in [k for k, v in sample.items() if k not in ("node", "gpus") and not is_number(v)]:
        del sample[key]
    gpus = sample.get("gpus")
    if gpus is not None:
        sample["gpus"] = [
            {k: v for k, v in g.items() if is_number(v) or k == "throttle"}
            for g in (gpus if isinstance(gpus, list) else [])
            if isinstance(g, dict)
        ]
    return True


_CURVES: dict[Path, tuple[Curves, int, int | None]] = {}


def read_scalars(paths: list[Path]) -> dict[str, dict[int, float]]:
    """Every scalar in these event files: tag -> step -> value (a later write of a step wins,
    as after a resume). Both encodings: `simple_value` (torch's SummaryWriter) and tensors
    (TensorFlow 2's summaries)."""
    try:  # tensorboard, only for a job whose script wrote event files instead of metrics.jsonl
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
        from tensorboard.util import tensor_util
    except ImportError:
        log.warning("cannot read TensorBoard event files: the tensorboard package is missing")
        return {}
    scalars: dict[str, dict[int, float]] = {}
    for path in paths:
        try:
            for event in EventFileLoader(str(path)).Load():
                if not event.HasField("summary"):
                    continue
                for value in event.summary.value:
                    number = _scalar(value, tensor_util)
                    if number is not None:
                        scalars.setdefault(value.tag, {})[int(event.step)] = number
        except Exception as exc:  # a truncated or foreign file: keep the others
            log.warning("%s: unreadable TensorBoard events (%s)", path, exc)
    return scalars


def _scalar(value: Any, tensor_util: Any) -> float | None:
    if value.HasField("simple_value"):
        return float(value.simple_value)
    if value.HasField("tensor"):
        array = tensor_util.make_ndarray(value.tensor)
        if array.size == 1 and array.dtype.kind in "fiu":
            return float(array.reshape(()))
    return None


def curves_from_events(paths: list[Path]) -> Curves:
    scalars = {tag.lower(): points for tag, points in read_scalars(paths).items()}

    def first(tags: tuple[str, ...], prefix: str | None = None) -> dict[int, float]:
        for tag in tags:
            if tag in scalars:
                return scalars[tag]
        if prefix:
            for tag in sorted(scalars):
                if tag.startswith(prefix):
                    return scalars[tag]
        return {}

    loss = first(TRAIN_LOSS_TAGS)
    rate = first(LEARNING_RATE_TAGS, prefix="lr-")
    speed = first(TOKENS_PER_S_TAGS)
    train = [
        {
            "kind": "train",
            "step": step,
            "loss": value,
            "learning_rate": rate.get(step),
            **({"tokens_per_s": speed[step]} if step in speed else {}),
        }
        for step, value in sorted(loss.items())
    ]
    evals = [
        {"kind": "eval", "step": step, "eval_loss": value}
        for step, value in sorted(first(EVAL_LOSS_TAGS).items())
    ]
    last = max((max(points) for points in scalars.values() if points), default=0)
    return Curves(source="tensorboard", train=train, evals=evals, last_step=last)


def load_telemetry(directory: Path, *, cached: bool = False) -> dict[str, list[dict[str, Any]]]:
    """Each node's telemetry samples, in time order, by node name (the list is shared when
    cached: do not change it)."""
    telemetry = {}
    for path in sorted((directory / "logs").glob(TELEMETRY_GLOB)):
        # One writer, appending: in time order. Cleaned in place (idempotent).
        samples = [s for s in read_jsonl(path, cached=cached) if _clean_sample(s)]
        if samples:
            telemetry[path.name.removesuffix(".telemetry.jsonl")] = samples
    return telemetry


# --- figures from the curves -------------------------------------------------------------------


def tokens_per_s(train: list[dict[str, Any]]) -> float | None:
    """Tokens over training time: every rank's counted tokens, summed, over the intervals'
    training seconds (evaluations and checkpoints left out). Lines from before the ranks were
    counted carry only a rate: their mean, the best those allow."""
    counted = [r for r in train if r.get("train_s") and r.get("tokens") is not None]
    if counted:
        seconds = sum(float(r["train_s"]) for r in counted)
        return round(sum(int(r["tokens"]) for r in counted) / seconds, 1) if seconds else None
    speeds = [float(r["tokens_per_s"]) for r in train[1:] if r.get("tokens_per_s")]
    return round(sum(speeds) / len(speeds), 1) if speeds else None


def rank_totals(train: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each rank over the whole run: its node, steps, tokens, peak memory, and its mean step
    time split into work (its own), data (waiting for batches) and sync (waiting for peers)."""
    totals: dict[int, dict[str, Any]] = {}
    for record in train:
        for figures in record.get("ranks") or []:
            rank = int(figures.get("rank", 0))
            total = totals.setdefault(
                rank,
                {
                    "rank": rank,
                    "node": figures.get("node"),
                    "steps": 0,
                    "tokens": 0,
                    "peak_memory_mb": 0.0,
                    "train_s": 0.0,
                    "sync_total": 0.0,
                    "data_total": 0.0,
                },
            )
            steps = int(figures.get("steps") or 0)
            total["steps"] += steps
            total["tokens"] += int(figures.get("tokens") or 0)
            total["train_s"] += float(figures.get("train_s") or 0.0)
            total["sync_total"] += float(figures.get("sync_s") or 0.0) * steps
            total["data_total"] += float(figures.get("data_s") or 0.0) * steps
            memory = float(figures.get("peak_memory_mb") or 0.0)
            total["peak_memory_mb"] = max(total["peak_memory_mb"], memory)
    ranks = []
    for rank in sorted(totals):
        total = totals[rank]
        steps = max(total["steps"], 1)
        step_time = total["train_s"] / steps
        sync, data = total.pop("sync_total") / steps, total.pop("data_total") / steps
        total.update(
            train_s=round(total["train_s"], 3),
            step_time_s=round(step_time, 4),
            own_step_s=round(max(step_time - sync, 0.0), 4),
            data_s=round(data, 4),
            sync_s=round(sync, 4),
        )
        ranks.append(total)
    return ranks


def stragglers(ranks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ranks whose own step time (waiting for peers left out: under DDP every rank's full step
    lasts as long as the slowest one's) is over STRAGGLER_RATIO x the median's, slowest first."""
    own = [r["own_step_s"] for r in ranks if r.get("steps")]
    if len(own) < 2:
        return []
    median = statistics.median(own)
    slow = [
        {
            "rank": r["rank"],
            "node": r["node"],
            "own_step_s": r["own_step_s"],
            "median_s": round(median, 4),
            "ratio": round(r["own_step_s"] / median, 2),
        }
        for r in ranks
        if r.get("steps") and median > 0 and r["own_step_s"] > STRAGGLER_RATIO * median
    ]
    return sorted(slow, key=lambda s: -s["ratio"])
