"""The daemon's health monitoring: light probes every minute, deep ones now and then, a history.

A light probe is the health role's own probe (module_utils/ugro_probe.py) with --light, sent to
the node's system Python over SSH on stdin: it costs a node nothing a running job would notice
(torch's facts come from the node's cache; no import, no CUDA context). A deep one is `ugro
health --deep` (the health playbook: torch imported, the GPUs checked), run hourly and when a
node comes back, on idle nodes only. Every verdict is appended to data/health_history.jsonl
(fsync'd, one line per node and probe); `transitions` turns that history into what changed:
up/down, a GPU lost, the disk filling, the driver changed.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ugro.core.cluster import Cluster, Node
from ugro.core.files import append_jsonl
from ugro.nodes import hostkeys, scripts
from ugro.nodes.inventory import environment_vars
from ugro.nodes.ssh import on_node

log = logging.getLogger(__name__)

HISTORY = "health_history.jsonl"
Status = Literal["up", "unhealthy", "down"]


@dataclass(frozen=True)
class Sample:
    """One node's verdict from one probe."""

    node: str
    at: float  # time.time()
    kind: Literal["light", "deep"]
    status: Status
    problems: tuple[str, ...] = ()
    gpus: tuple[str, ...] = ()  # names, in index order
    vram_gb: float | None = None  # the smallest GPU's memory
    driver: str | None = None
    disk_free_gb: float | None = None
    load1: float | None = None
    ugro_jobs: Mapping[str, int] = field(default_factory=dict)

    cpus: int | None = None
    # The probe's whole report (not kept in the history): what a launch may use instead of
    # probing the node again (ugro.health.fresh_reports).
    report: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def healthy(self) -> bool:
        return self.status == "up"

    @property
    def loaded(self) -> bool:
        """Busy with work of some kind (a load of one per CPU): no torch import there now."""
        return bool(self.load1 and self.cpus and self.load1 >= self.cpus)

    @property
    def why(self) -> str:
        if self.status == "down":
            return "down" + (f" ({self.problems[0]})" if self.problems else "")
        return "unhealthy: " + "; ".join(self.problems) if self.problems else self.status

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["report"]
        data["problems"] = list(self.problems)
        data["gpus"] = list(self.gpus)
        data["ugro_jobs"] = dict(self.ugro_jobs)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Sample:
        return cls(
            node=str(data["node"]),
            at=float(data["at"]),
            kind="deep" if data.get("kind") == "deep" else "light",
            status=data["status"] if data.get("status") in ("up", "unhealthy") else "down",
            problems=tuple(str(p) for p in data.get("problems") or ()),
            gpus=tuple(str(g) for g in data.get("gpus") or ()),
            vram_gb=_float(data.get("vram_gb")),
            driver=data.get("driver"),
            disk_free_gb=_float(data.get("disk_free_gb")),
            load1=_float(data.get("load1")),
            ugro_jobs={str(k): int(v) for k, v in (data.get("ugro_jobs") or {}).items()},
            cpus=int(data["cpus"]) if data.get("cpus") else None,
        )


def _job_counts(jobs: Any) -> dict[str, int]:
    """The probe's {job id: [pids]} as {job id: processes}."""
    if not isinstance(jobs, Mapping):
        return {}
    return {str(k): len(v) if isinstance(v, list) else int(v) for k, v in jobs.items()}


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


# --- probing ------------------------------------------------------------------------------------


def probe_argv(cluster: Cluster, node: Node) -> list[str]:
    """The light probe's argv: the node's system Python running the health role's probe
    (read from stdin) with --light: torch's facts from the node's cache, never an import."""
    remote = [
        cluster.ssh.python_interpreter,
        "-",
        "--light",
        "--python",
        node.python,
        "--accelerator",
        node.accelerator,
        "--project-path",
        node.project_path,
        "--address",
        node.address,
        "--lock-file",
        str(environment_vars(cluster, node)["ugro_env_lock_file"]),
        "--min-free-disk-gb",
        str(cluster.daemon.disk_min_free_gb),
    ]
    return on_node(cluster, node, remote)


def light_probe(cluster: Cluster, node: Node, now: float, previous: Sample | None = None) -> Sample:
    timeout = cluster.ssh.connect_timeout + 20
    try:
        done = subprocess.run(
            probe_argv(cluster, node),
            input=scripts.script(scripts.PROBE).encode(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Sample(node.name, now, "light", "down", (f"no answer within {timeout}s",))
    except OSError as exc:
        return Sample(node.name, now, "light", "down", (f"cannot run ssh: {exc.strerror}",))
    try:
        report = json.loads(done.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        report = None
    if done.returncode != 0 or not isinstance(report, dict):
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = lines[-1][:200] if lines else f"exit {done.returncode}"
        # A refused host key says which changed into which, and the way out.
        reason = hostkeys.explain(cluster, node, " ".join(lines)) or reason
        # ssh itself exits 255 when it cannot reach or log in to the node.
        status: Status = "down" if done.returncode == 255 else "unhealthy"
        return Sample(node.name, now, "light", status, (reason,))
    return judge(node.name, now, report, previous)


def judge(name: str, now: float, report: Mapping[str, Any], previous: Sample | None) -> Sample:
    """A probe's report as a verdict: its own problems (the disk below the daemon's minimum, no
    interface with the node's address, nvidia-smi failing, a broken environment), and a GPU
    that was there the last time and is not now."""
    problems = [str(p) for p in report.get("problems") or []]
    gpus = [g for g in report.get("gpus") or [] if isinstance(g, Mapping)]
    names = tuple(str(g.get("name")) for g in gpus)
    sizes = [int(g["vram_total_mb"]) for g in gpus if g.get("vram_total_mb")]
    if previous is not None and len(names) < len(previous.gpus):
        problems.append(f"GPU lost: {len(previous.gpus)} seen before, {len(names)} now")
    jobs = report.get("ugro_jobs") or {}
    return Sample(
        node=name,
        at=now,
        kind="light",
        status="unhealthy" if problems else "up",
        problems=tuple(problems),
        gpus=names,
        vram_gb=round(min(sizes) / 1024, 1) if sizes else None,
        driver=str(report["driver_version"]) if report.get("driver_version") else None,
        disk_free_gb=_float(report.get("disk_free_gb")),
        load1=_float(report.get("load1")),
        ugro_jobs=_job_counts(jobs),
        cpus=int(report["cpus"]) if report.get("cpus") else None,
        report=dict(report),
    )


def probe_all(
    cluster: Cluster, now: float, previous: Mapping[str, Sample], names: Sequence[str] = ()
) -> list[Sample]:
    nodes = [cluster.node(n) for n in names] if names else list(cluster.nodes)
    with ThreadPoolExecutor(max_workers=max(len(nodes), 1)) as pool:
        return list(
            pool.map(lambda node: light_probe(cluster, node, now, previous.get(node.name)), nodes)
        )


def deep_samples(summary: Mapping[str, Any], now: float) -> list[Sample]:
    """`ugro health --json`'s verdicts (the health playbook's) as samples."""
    samples = []
    for name, node in (summary.get("nodes") or {}).items():
        report = node.get("report") or {}
        gpus = report.get("gpus") or []
        sizes = [g.get("vram_total_mb") for g in gpus if g.get("vram_total_mb")]
        status: Status = {"healthy": "up", "unhealthy": "unhealthy"}.get(
            str(node.get("status")), "down"
        )  # type: ignore[assignment]
        samples.append(
            Sample(
                node=str(name),
                at=now,
                kind="deep",
                status=status,
                problems=() if status == "up" else (str(node.get("message") or status),),
                gpus=tuple(str(g.get("name")) for g in gpus),
                vram_gb=round(min(sizes) / 1024, 1) if sizes else None,
                driver=report.get("driver_version"),
                ugro_jobs=_job_counts(report.get("ugro_jobs") or {}),
                report=dict(report),
            )
        )
    return samples


# --- history ------------------------------------------------------------------------------------


# Past this size the history moves to <name>.1 (the one before is dropped): a line a minute per
# node is about a megabyte a day for three nodes.
ROTATE_BYTES = 32 << 20


def record(path: Path, samples: Iterable[Sample]) -> None:
    try:
        if path.stat().st_size > ROTATE_BYTES:
            path.replace(path.with_name(path.name + ".1"))
    except FileNotFoundError:
        pass
    for sample in samples:
        append_jsonl(path, sample.to_json())


def read_history(path: Path, node: str | None = None, *, tail: int | None = None) -> list[Sample]:
    """The samples in the history (the rotated part first), or in its last `tail` bytes."""
    samples = []
    parts = [path] if tail else [path.with_name(path.name + ".1"), path]
    for part in parts:
        try:
            with open(part, "rb") as handle:
                if tail:
                    handle.seek(max(part.stat().st_size - tail, 0))
                    handle.readline()  # the first line may be cut in half
                lines = handle.read().decode("utf-8", "replace").splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            try:
                sample = Sample.from_json(json.loads(line))
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line after a crash, or a foreign one
            if node is None or sample.node == node:
                samples.append(sample)
    return samples


def latest(samples: Iterable[Sample]) -> dict[str, Sample]:
    found: dict[str, Sample] = {}
    for sample in samples:
        found[sample.node] = sample
    return found


def transitions(samples: Iterable[Sample]) -> list[tuple[Sample, str]]:
    """What changed from each node's previous sample to the next: the sample and a sentence.
    The driver and the GPUs are compared with the last time the node answered, so a driver
    changed across a reboot shows."""
    changes: list[tuple[Sample, str]] = []
    before: dict[str, Sample] = {}
    answered: dict[str, Sample] = {}
    for sample in samples:
        prior = before.get(sample.node)
        before[sample.node] = sample
        if prior is None:
            changes.append((sample, f"first seen {sample.status}"))
        elif sample.status != prior.status:
            detail = f": {'; '.join(sample.problems)}" if sample.problems else ""
            changes.append((sample, f"{prior.status} -> {sample.status}{detail}"))
        elif set(sample.problems) - set(prior.problems):
            new = sorted(set(sample.problems) - set(prior.problems))
            changes.append((sample, "; ".join(new)))
        if sample.status == "down":
            continue
        last = answered.get(sample.node)
        answered[sample.node] = sample
        if last is None:
            continue
        if sample.driver and last.driver and sample.driver != last.driver:
            changes.append((sample, f"driver changed: {last.driver} -> {sample.driver}"))
        if (
            len(sample.gpus) < len(last.gpus)
            and sample.kind == last.kind
            and not any(p.startswith("GPU lost") for p in sample.problems)
        ):
            changes.append((sample, f"GPU lost: {len(last.gpus)} -> {len(sample.gpus)}"))
    return changes
