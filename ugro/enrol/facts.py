"""What a machine has, asked before anything of UGRO's runs there (Python may be missing): a
POSIX shell script, the same text on every machine and never built from input, that prints
`key=value` lines; and what a node needs of it, each shortfall with its fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Run as `sh -c SCRIPT` on the node (through ssh) or on this machine (for `ugro init`).
SCRIPT = r"""
export LC_ALL=C
echo "hostname=$(hostname 2>/dev/null)"
echo "home=$HOME"
echo "python3=$(command -v python3 2>/dev/null)"
if command -v python3 >/dev/null 2>&1; then
  version=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
  echo "python_version=$version"
fi
echo "rsync=$(command -v rsync 2>/dev/null)"
echo "disk_free_kb=$(df -Pk "$HOME" 2>/dev/null | awk 'NR==2 {print $4}')"
echo "cpu_cores=$(nproc 2>/dev/null)"
echo "mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo 2>/dev/null)"
pixi=$(command -v pixi 2>/dev/null)
[ -z "$pixi" ] && [ -x "$HOME/.pixi/bin/pixi" ] && pixi="$HOME/.pixi/bin/pixi"
echo "pixi=$pixi"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total \
    --format=csv,noheader,nounits 2>/dev/null | sed 's/^/gpu=/'
fi
"""

# The oldest driver series each GPU generation's CUDA needs, by compute capability's major
# (and, where a minor matters, major.minor): Blackwell's sm_120 and sm_100 need CUDA 12.8, the
# 570 series; Hopper and Ada CUDA 11.8, 520; Ampere CUDA 11.0/11.1, 450/455.
_DRIVER_FLOOR = {"12": 570, "10": 570, "9": 520, "8.9": 520, "8.6": 455, "8": 450, "7": 418}
_TORCH_CUDA = {"12": "12.8", "10": "12.8"}
MIN_PYTHON = (3, 8)


@dataclass(frozen=True)
class Gpu:
    name: str
    driver: str
    capability: str  # "12.0"
    memory_mb: int | None


@dataclass
class Facts:
    hostname: str = ""
    home: str = ""
    python3: str = ""
    python_version: str = ""
    rsync: str = ""
    disk_free_gb: float | None = None
    cpu_cores: int | None = None
    ram_gb: float | None = None
    pixi: str = ""
    gpus: list[Gpu] = field(default_factory=list)

    @property
    def accelerator(self) -> str:
        return "cuda" if self.gpus else "cpu"

    def hardware(self) -> dict[str, object]:
        """cluster.yaml's `hardware:` for this machine."""
        described: dict[str, object] = {}
        if self.gpus:
            described["gpu_model"] = self.gpus[0].name
            described["gpu_count"] = len(self.gpus)
            if self.gpus[0].memory_mb:
                described["vram_gb"] = round(self.gpus[0].memory_mb / 1024, 1)
        else:
            described["gpu_model"] = "none"
            described["gpu_count"] = 0
        if self.cpu_cores:
            described["cpu_cores"] = self.cpu_cores
        if self.ram_gb:
            described["ram_gb"] = self.ram_gb
        return described


def parse(text: str) -> Facts:
    facts = Facts()
    for line in text.splitlines():
        key, found, value = line.partition("=")
        if not found:
            continue
        value = value.strip()
        if key == "gpu":
            cells = [c.strip() for c in value.split(",")]
            if len(cells) == 4:
                memory = int(cells[3]) if cells[3].isdigit() else None
                facts.gpus.append(Gpu(cells[0], cells[1], cells[2], memory))
        elif key in ("disk_free_kb", "mem_kb", "cpu_cores") and value.isdigit():
            number = int(value)
            if key == "disk_free_kb":
                facts.disk_free_gb = round(number / 1024**2, 1)
            elif key == "mem_kb":
                facts.ram_gb = round(number / 1024**2, 1)
            else:
                facts.cpu_cores = number
        elif key in ("hostname", "home", "python3", "python_version", "rsync", "pixi"):
            setattr(facts, key, value)
    return facts


def problems(facts: Facts, *, name: str, manager: str, disk_min_free_gb: float) -> list[str]:
    """What keeps the machine from being a node, each with how to fix it."""
    found = []
    if not facts.python3:
        found.append(f"{name} has no python3: install it (`sudo apt-get install python3`)")
    elif not _at_least(facts.python_version, MIN_PYTHON):
        found.append(
            f"{name}'s python3 is {facts.python_version or 'unreadable'}; UGRO needs 3.8 or "
            "newer (`sudo apt-get install python3`, or a newer distribution)"
        )
    if not facts.rsync:
        found.append(f"{name} has no rsync: install it (`sudo apt-get install rsync`)")
    if facts.disk_free_gb is not None and facts.disk_free_gb < disk_min_free_gb:
        found.append(
            f"{name} has {facts.disk_free_gb} GB free in {facts.home or 'its home'}; jobs need "
            f"{disk_min_free_gb:g} GB at least (daemon.disk_min_free_gb): free some space"
        )
    for gpu in facts.gpus:
        floor = _driver_floor(gpu.capability)
        driver = _major(gpu.driver)
        if floor and driver is not None and driver < floor:
            sm = "sm_" + gpu.capability.replace(".", "")
            torch_cuda = _TORCH_CUDA.get(gpu.capability.split(".")[0])
            needs = f" and a CUDA {torch_cuda} torch" if torch_cuda else ""
            found.append(
                f"{name}'s {gpu.name} ({sm}) needs a driver of the {floor} series or newer"
                f"{needs}; it has {gpu.driver}: update the NVIDIA driver"
            )
            break
    if manager == "pixi" and not facts.pixi:
        found.append(
            f"{name} has no pixi (environment.manager: pixi): install it "
            "(`curl -fsSL https://pixi.sh/install.sh | bash`), or set environment.manager: venv"
        )
    return found


def _at_least(version: str, floor: tuple[int, int]) -> bool:
    match = re.fullmatch(r"(\d+)\.(\d+)", version)
    return match is not None and (int(match[1]), int(match[2])) >= floor


def _major(version: str) -> int | None:
    match = re.match(r"(\d+)", version)
    return int(match[1]) if match else None


def _driver_floor(capability: str) -> int | None:
    major = capability.split(".")[0]
    return _DRIVER_FLOOR.get(capability) or _DRIVER_FLOOR.get(major)
