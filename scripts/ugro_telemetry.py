#!/usr/bin/env python3
"""A node's telemetry while a job runs: one JSON line per interval (1 s by default).

    ugro_telemetry.py --out logs/<node>.telemetry.jsonl [--interval 1] [--watch PID]

Every node, GPU or not: CPU, load, memory, the job's own processes (CPU and resident memory of
the watched process and its descendants), disk free and I/O, network, through psutil. GPUs
through NVML (nvidia-ml-py): utilisation, memory, temperature, power, SM and memory clocks and
the active throttle reasons; where NVML cannot start, a single long-running `nvidia-smi
--loop-ms` (one process for the whole job, not one per sample). No GPU, no "gpus" key.

UGRO's supervise.sh starts it beside the job's torchrun agent and ends it (SIGTERM) when the
agent ends; it also ends by itself when the watched process is gone. Whatever fails here is
written to its stderr and never touches the job: missing psutil means no telemetry, not a
failed job.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

# NVML's clock event (throttle) reason bits, as nvml.h names them.
THROTTLE_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}

SMI_FIELDS = (
    "index",
    "utilization.gpu",
    "memory.used",
    "memory.total",
    "temperature.gpu",
    "power.draw",
    "clocks.sm",
    "clocks.mem",
    "clocks_throttle_reasons.active",
)


def throttle_reasons(mask: int | None) -> list[str] | None:
    if mask is None:
        return None
    return [name for bit, name in THROTTLE_REASONS.items() if mask & bit]


def _number(text: str) -> float | None:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        return None  # "[N/A]", "[Not Supported]" on cards that do not report it


def parse_smi_line(line: str) -> dict[str, Any] | None:
    """One line of `nvidia-smi --query-gpu=<SMI_FIELDS> --format=csv,noheader,nounits`."""
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != len(SMI_FIELDS) or not parts[0].isdigit():
        return None
    values = [_number(p) for p in parts]
    try:
        mask = int(parts[-1], 16)
    except ValueError:
        mask = None
    return gpu_record(
        index=int(parts[0]),
        util=values[1],
        mem_used_mb=values[2],
        mem_total_mb=values[3],
        temp_c=values[4],
        power_w=values[5],
        sm_clock_mhz=values[6],
        mem_clock_mhz=values[7],
        throttle=throttle_reasons(mask),
    )


def gpu_record(**fields: Any) -> dict[str, Any]:
    return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in fields.items()}


class Nvml:
    """GPUs through NVML: no process per sample, no daemon."""

    def __init__(self) -> None:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        self.nvml = pynvml
        self.handles = [
            pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())
        ]

    def _get(self, call: str, *args: Any) -> Any:
        function = getattr(self.nvml, call, None)
        if function is None:
            return None
        try:
            return function(*args)
        except self.nvml.NVMLError:
            return None  # not supported on this card (GeForce lacks some): left out

    def read(self) -> list[dict[str, Any]]:
        nvml, gpus = self.nvml, []
        for index, handle in enumerate(self.handles):
            util = self._get("nvmlDeviceGetUtilizationRates", handle)
            memory = self._get("nvmlDeviceGetMemoryInfo", handle)
            power = self._get("nvmlDeviceGetPowerUsage", handle)
            mask = self._get("nvmlDeviceGetCurrentClocksEventReasons", handle)
            if mask is None:
                mask = self._get("nvmlDeviceGetCurrentClocksThrottleReasons", handle)
            gpus.append(
                gpu_record(
                    index=index,
                    util=float(util.gpu) if util is not None else None,
                    mem_used_mb=memory.used / 2**20 if memory is not None else None,
                    mem_total_mb=memory.total / 2**20 if memory is not None else None,
                    temp_c=self._get("nvmlDeviceGetTemperature", handle, nvml.NVML_TEMPERATURE_GPU),
                    power_w=power / 1000 if power is not None else None,
                    sm_clock_mhz=self._get("nvmlDeviceGetClockInfo", handle, nvml.NVML_CLOCK_SM),
                    mem_clock_mhz=self._get("nvmlDeviceGetClockInfo", handle, nvml.NVML_CLOCK_MEM),
                    throttle=throttle_reasons(mask),
                )
            )
        return gpus

    def close(self) -> None:
        self.nvml.nvmlShutdown()


class SmiLoop:
    """GPUs through one `nvidia-smi --loop-ms` for the whole job; the latest line per GPU."""

    def __init__(self, binary: str, interval: float) -> None:
        self.latest: dict[int, dict[str, Any]] = {}
        self.process = subprocess.Popen(
            [
                binary,
                f"--query-gpu={','.join(SMI_FIELDS)}",
                "--format=csv,noheader,nounits",
                f"--loop-ms={max(int(interval * 1000), 100)}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            gpu = parse_smi_line(line)
            if gpu is not None:
                self.latest[gpu["index"]] = gpu

    def read(self) -> list[dict[str, Any]]:
        return [self.latest[i] for i in sorted(self.latest)]

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()


def open_gpus(interval: float) -> Nvml | SmiLoop | None:
    try:
        nvml = Nvml()
    except Exception as exc:  # no library, no driver, no GPU: try nvidia-smi
        reason = f"{type(exc).__name__}: {exc}"
    else:
        return nvml if nvml.handles else None
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    print(f"ugro_telemetry: NVML unavailable ({reason}); using nvidia-smi", file=sys.stderr)
    return SmiLoop(binary, interval)


class Sampler:
    """psutil's view of the node, as rates between two samples where a counter only grows."""

    def __init__(self, psutil: Any, *, watch: int | None, disk_path: str) -> None:
        self.psutil = psutil
        self.watch = watch
        self.disk_path = disk_path
        self.procs: dict[int, Any] = {}
        self.last_at = time.monotonic()
        self.last_net = psutil.net_io_counters()
        self.last_disk = _disk_counters(psutil)
        psutil.cpu_percent(None)  # the first call only starts the interval

    def job_processes(self) -> tuple[float, float]:
        """CPU (percent of one core, summed) and resident memory of the watched tree."""
        if self.watch is None:
            return 0.0, 0.0
        try:
            root = self.psutil.Process(self.watch)
            tree = [root, *root.children(recursive=True)]
        except self.psutil.Error:
            return 0.0, 0.0
        alive, cpu, rss = {}, 0.0, 0.0
        for process in tree:
            known = self.procs.get(process.pid, process)  # cpu_percent needs the same object
            try:
                cpu += known.cpu_percent(None)
                rss += known.memory_info().rss
            except self.psutil.Error:
                continue
            alive[process.pid] = known
        self.procs = alive
        return cpu, rss / 2**20

    def sample(self) -> dict[str, Any]:
        psutil = self.psutil
        now = time.monotonic()
        seconds = max(now - self.last_at, 1e-6)
        memory = psutil.virtual_memory()
        net = psutil.net_io_counters()
        disk = _disk_counters(psutil)
        job_cpu, job_rss = self.job_processes()
        record: dict[str, Any] = {
            "cpu_percent": psutil.cpu_percent(None),
            "load1": round(os.getloadavg()[0], 2),
            "mem_used_mb": round((memory.total - memory.available) / 2**20, 1),
            "mem_total_mb": round(memory.total / 2**20, 1),
            "job_cpu_percent": round(job_cpu, 1),
            "job_rss_mb": round(job_rss, 1),
            "disk_free_gb": round(shutil.disk_usage(self.disk_path).free / 2**30, 2),
        }

        def rate(now_bytes: int, then_bytes: int) -> float:
            return round((now_bytes - then_bytes) / seconds / 2**20, 3)  # MB/s

        if net is not None and self.last_net is not None:
            record["net_rx_mb_s"] = rate(net.bytes_recv, self.last_net.bytes_recv)
            record["net_tx_mb_s"] = rate(net.bytes_sent, self.last_net.bytes_sent)
        if disk is not None and self.last_disk is not None:
            record["disk_read_mb_s"] = rate(disk.read_bytes, self.last_disk.read_bytes)
            record["disk_write_mb_s"] = rate(disk.write_bytes, self.last_disk.write_bytes)
        self.last_at, self.last_net, self.last_disk = now, net, disk
        return record


def _disk_counters(psutil: Any) -> Any:
    try:
        return psutil.disk_io_counters()
    except (OSError, RuntimeError):
        return None  # no /proc/diskstats (some containers)


def _alive(psutil: Any, pid: int | None) -> bool:
    """Whether the watched process still runs (a zombie, dead but not yet reaped, does not)."""
    if pid is None:
        return True
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the JSON lines file to append to")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--watch", type=int, help="stop when this process is gone")
    parser.add_argument("--count", type=int, help="stop after this many samples")
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error("--interval must be above 0")
    try:
        import psutil
    except ImportError:
        print(
            "ugro_telemetry: psutil is missing: no telemetry (pip install psutil)", file=sys.stderr
        )
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    node = os.environ.get("UGRO_NODE") or socket.gethostname()
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    sampler = Sampler(psutil, watch=args.watch, disk_path=os.path.dirname(out))
    gpus = open_gpus(args.interval)
    written = 0

    def write(handle: Any) -> None:
        nonlocal written
        record = {"t": round(time.time(), 3), "node": node, **sampler.sample()}
        if gpus is not None:
            record["gpus"] = gpus.read()
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        written += 1

    try:
        with open(out, "a", encoding="utf-8") as handle:
            next_at = time.monotonic() + args.interval
            while not stop.wait(max(next_at - time.monotonic(), 0)) and _alive(psutil, args.watch):
                next_at = max(next_at + args.interval, time.monotonic())  # no burst after a stall
                write(handle)
                if args.count is not None and written >= args.count:
                    return 0
            write(handle)  # the part of an interval up to the end: a short job gets one too
    finally:
        if gpus is not None:
            gpus.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
