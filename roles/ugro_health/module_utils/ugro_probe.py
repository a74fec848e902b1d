"""UGRO node probe: everything `ugro health` wants to know about one node, in one program.

Stdlib only, Python 3.8+. The health role runs it on each node inside its module
(library/ugro_health_probe.py, one task: each Ansible task costs a round trip and a fork per
node); run as a script it prints the same report as one JSON object (the daemon's light probe
and the benchmarks' baselines do that over ssh, with ugro_jobprocs.py inlined:
ugro.nodes.scripts). The report: system facts, GPUs from nvidia-smi, and torch as the node's
own training environment sees it. It never raises: whatever goes wrong becomes a `problems`
entry, and `healthy` sums them up. `--light` (the daemon's minute-by-minute probe, sent over
ssh on stdin) never starts the training interpreter: torch's facts come from the cache or not
at all, so a probe costs a running job nothing (no CUDA context, no torch import).

Importing torch is most of a probe's cost (seconds of CPU, and with CUDA a context on every GPU,
memory a running job may need). So the torch facts are kept in a per-user cache on the node,
reused while nothing they depend on has changed: the interpreter, every directory on its
sys.path and torch's own (adding, removing or upgrading a package changes a directory's mtime),
the GPUs and driver nvidia-smi lists, the CUDA environment variables and the boot. An age
limit (--torch-cache-ttl) bounds the rest; --deep ignores the cache.
"""

import argparse
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

try:  # inside the Ansible module (library/ugro_health_probe.py)
    from ansible.module_utils.ugro_jobprocs import jobs_here
except ImportError:  # run as a script: inlined before it (ugro.nodes.scripts), or beside it
    from ugro_jobprocs import jobs_here

GPU_FIELDS = (
    "index,name,memory.total,memory.free,driver_version,compute_cap,utilization.gpu,temperature.gpu"
)

# Runs under the node's training environment, which may be any Python with torch (or without).
TORCH_PROBE = r"""
import json, platform, sys
out = {"python_version": platform.python_version(), "executable": sys.executable}
try:
    import torch
except Exception as exc:
    out["torch_error"] = "%s: %s" % (type(exc).__name__, exc)
    print(json.dumps(out)); sys.exit(0)
# What the facts below depend on, for the cache: the import path and torch's own directory.
import os
out["watch"] = [p for p in sys.path if p and os.path.isdir(p)]
out["watch"].append(os.path.dirname(torch.__file__))
out["torch_version"] = torch.__version__
out["cuda_build"] = torch.version.cuda
try:
    out["cuda_available"] = bool(torch.cuda.is_available())
    out["device_count"] = torch.cuda.device_count() if out["cuda_available"] else 0
    out["arch_list"] = torch.cuda.get_arch_list() if torch.version.cuda else []
    nccl = torch.cuda.nccl.version() if out["cuda_available"] else None
    out["nccl_version"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl
except Exception as exc:
    out["cuda_error"] = "%s: %s" % (type(exc).__name__, exc)
print(json.dumps(out))
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--python", required=True, help="the node's training interpreter")
    parser.add_argument("--accelerator", choices=("cuda", "cpu", "auto"), default="auto")
    parser.add_argument("--project-path", required=True)
    parser.add_argument("--nvidia-smi", default="nvidia-smi")
    parser.add_argument("--min-free-disk-gb", type=float, default=1.0)
    parser.add_argument("--torch-timeout", type=float, default=90.0)
    parser.add_argument(
        "--torch-cache-dir", default="", help="default: $XDG_CACHE_HOME/ugro or ~/.cache/ugro"
    )
    parser.add_argument("--torch-cache-ttl", type=float, default=3600.0, help="seconds; 0: none")
    # `--deep` alone, or `--deep true|false` as the health role passes it.
    parser.add_argument(
        "--deep",
        nargs="?",
        const="true",
        default="false",
        choices=("true", "false"),
        help="import torch even if its facts are cached",
    )
    # Launch preflight: the interface holding the node's cluster address (for the GLOO/NCCL
    # socket variables), a free rendezvous port from a given one up, the environment's lock hash.
    parser.add_argument("--address", default="")
    parser.add_argument("--port-from", type=int, default=0)
    parser.add_argument("--lock-file", default="")
    parser.add_argument("--light", action="store_true", help="torch's facts from the cache only")
    args = parser.parse_args(argv)
    print(json.dumps(probe(args), sort_keys=True))
    return 0


def probe(args):
    report = {"problems": [], "warnings": [], "accelerator": args.accelerator}
    report.update(system_facts(args.project_path))
    if report["disk_free_gb"] is not None and report["disk_free_gb"] < args.min_free_disk_gb:
        report["problems"].append(
            "disk filling: only {:.1f} GB free at {} (need {:.1f})".format(
                report["disk_free_gb"], report["disk_path"], args.min_free_disk_gb
            )
        )
    gpus = gpu_facts(args.nvidia_smi)
    report.update(gpus)
    cache = TorchCache.from_args(args, gpus)
    deep = str(args.deep).lower() == "true"
    light = bool(getattr(args, "light", False))
    env = None if deep or cache is None else cache.read()
    if env is None and not light:
        env = torch_facts(args.python, args.torch_timeout)
        if cache is not None:
            cache.write(env)
    report["env"] = env or {}
    effective = args.accelerator
    if effective == "auto":
        effective = "cuda" if report["gpus"] else "cpu"
    report["effective_accelerator"] = effective
    if env is not None:
        judge(report, env, effective)
    elif report["nvidia_smi"] not in ("ok", "not found"):
        report["problems"].append("nvidia-smi " + report["nvidia_smi"])
    if args.address:
        report["interface"] = interface_for(args.address)
        if report["interface"] is None:
            report["problems"].append(f"no network interface holds {args.address}")
        elif args.port_from:
            report["free_port"] = free_port(args.address, args.port_from)
    report["lock_hash"] = lock_hash(args.lock_file) if args.lock_file else None
    report["ugro_jobs"] = jobs_here()
    report["healthy"] = not report["problems"]
    return report


def interface_for(address):
    """The name of the interface that holds the node's cluster address.

    The address is an IPv4 or IPv6 literal or a host name (resolved here, on the node itself,
    as its ranks will resolve it). A non-loopback interface wins over `lo`: a host name that
    also resolves to 127.0.1.1 (Debian's /etc/hosts) must not pin the job to loopback.
    """
    candidates = []
    for ip in resolve(address):
        name = _interface_holding(ip)
        if name is not None and name not in candidates:
            candidates.append(name)
    for name in candidates:
        if name != "lo":
            return name
    return candidates[0] if candidates else None


def resolve(address):
    """The IP addresses an address stands for (itself, for a literal), without duplicates."""
    try:
        infos = socket.getaddrinfo(address, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return []
    found = []
    for family, _, _, _, sockaddr in infos:
        ip = sockaddr[0].split("%", 1)[0]  # drop an IPv6 zone id
        if family in (socket.AF_INET, socket.AF_INET6) and (family, ip) not in found:
            found.append((family, ip))
    return found


def _interface_holding(family_ip):
    family, ip = family_ip
    if family == socket.AF_INET6:
        return _ipv6_interface(ip)
    return _ipv4_interface(ip)


def _ipv6_interface(ip):
    """From /proc/net/if_inet6: every IPv6 address of every interface, with its name."""
    wanted = socket.inet_pton(socket.AF_INET6, ip).hex()
    try:
        with open("/proc/net/if_inet6") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) >= 6 and fields[0].lower() == wanted:
                    return fields[5]
    except OSError:
        pass
    return None


def _ipv4_interface(ip):
    """SIOCGIFADDR on each interface (its primary IPv4 address)."""
    probe_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(probe_socket.fileno(), 0x8915, request)  # SIOCGIFADDR
            except OSError:
                continue
            if socket.inet_ntoa(answer[20:24]) == ip:
                return name
    finally:
        probe_socket.close()
    return None


def free_port(address, start, tries=100):
    """The first port from `start` that nothing listens on at `address` (None if all are taken)."""
    resolved = resolve(address)
    if not resolved:
        return None
    family, ip = resolved[0]
    for port in range(start, min(start + tries, 65536)):
        candidate = socket.socket(family, socket.SOCK_STREAM)
        try:
            candidate.bind((ip, port))
            return port
        except OSError as exc:
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                return None
        finally:
            candidate.close()
    return None


def lock_hash(path):
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return None


def system_facts(project_path):
    facts = {
        "hostname": socket.gethostname(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "probe_python": sys.executable,
        "load1": round(os.getloadavg()[0], 2),
    }
    meminfo = {}
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                meminfo[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    facts["ram_total_gb"] = _gb(meminfo.get("MemTotal"))
    facts["ram_available_gb"] = _gb(meminfo.get("MemAvailable"))
    # The project directory may not exist yet (before the first sync): measure what would hold it.
    path = project_path
    while path and not os.path.exists(path):
        parent = os.path.dirname(path)
        path = parent if parent != path else ""
    facts["disk_path"] = path or "/"
    try:
        facts["disk_free_gb"] = _gb(shutil.disk_usage(facts["disk_path"]).free)
    except OSError:
        facts["disk_free_gb"] = None
    return facts


def gpu_facts(nvidia_smi):
    facts = {"gpus": [], "driver_version": None, "cuda_driver_version": None, "nvidia_smi": None}
    executable = shutil.which(nvidia_smi)
    if executable is None:
        facts["nvidia_smi"] = "not found"
        return facts
    try:
        listing = subprocess.run(
            [executable, "--query-gpu=" + GPU_FIELDS, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        facts["nvidia_smi"] = f"failed: {exc}"
        return facts
    if listing.returncode != 0:
        message = (listing.stderr or listing.stdout).strip().splitlines()
        last = message[-1] if message else ""
        facts["nvidia_smi"] = f"exit {listing.returncode}: {last}"
        return facts
    facts["nvidia_smi"] = "ok"
    facts["gpus"] = parse_gpu_csv(listing.stdout)
    if facts["gpus"]:
        facts["driver_version"] = facts["gpus"][0].pop("driver_version")
        for gpu in facts["gpus"][1:]:
            gpu.pop("driver_version", None)
        try:
            header = subprocess.run(
                [executable], capture_output=True, text=True, timeout=30, check=False
            ).stdout
            match = re.search(r"CUDA Version:\s*([0-9.]+)", header)
            facts["cuda_driver_version"] = match.group(1) if match else None
        except (OSError, subprocess.SubprocessError):
            pass
    return facts


def parse_gpu_csv(text):
    gpus = []
    for line in text.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 8:
            continue
        index, name, total, free, driver, capability, util, temp = cells
        gpus.append(
            {
                "index": _int(index),
                "name": name,
                "vram_total_mb": _int(total),
                "vram_free_mb": _int(free),
                "driver_version": driver,
                "compute_capability": capability,
                "utilization_pct": _int(util),
                "temperature_c": _int(temp),
            }
        )
    return gpus


def torch_facts(python, timeout):
    try:
        done = subprocess.run(
            [python, "-c", TORCH_PROBE],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=dict(os.environ, PYTHONNOUSERSITE="1"),
        )
    except FileNotFoundError:
        return {"error": f"environment interpreter {python} not found (has it been synced?)"}
    except PermissionError:
        return {"error": f"environment interpreter {python} is not executable by this user"}
    except subprocess.TimeoutExpired:
        return {
            "error": f"environment interpreter {python} took over {timeout:.0f}s to import torch"
        }
    except OSError as exc:
        return {"error": f"environment interpreter {python} failed to start: {exc}"}
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        last = lines[-1] if lines else ""
        return {"error": f"{python} exited {done.returncode}: {last}"}
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"{python} printed no probe result"}


# Variables that change what torch finds: which GPUs, which CUDA libraries.
CUDA_VARIABLES = ("CUDA_VISIBLE_DEVICES", "CUDA_HOME", "LD_LIBRARY_PATH", "NVIDIA_VISIBLE_DEVICES")


class TorchCache:
    """One interpreter's torch facts, valid while the stamp of what they depend on is unchanged."""

    def __init__(self, path, python, ttl, context):
        self.path = path
        self.python = python
        self.ttl = ttl
        self.context = context

    @classmethod
    def from_args(cls, args, gpus):
        if args.torch_cache_ttl <= 0:
            return None
        # Not realpath: a venv's bin/python links to its base interpreter, shared by other venvs.
        python = os.path.abspath(os.path.expanduser(args.python))
        name = f"torch-facts-{hashlib.sha256(python.encode()).hexdigest()[:16]}.json"
        context = {
            "python": python,
            # Identity only: free memory, utilisation and temperature change all the time.
            "gpus": [
                [g.get("index"), g.get("name"), g.get("vram_total_mb"), g.get("compute_capability")]
                for g in gpus["gpus"]
            ],
            "driver": [gpus["driver_version"], gpus["cuda_driver_version"], gpus["nvidia_smi"]],
            "variables": {name: os.environ.get(name) for name in CUDA_VARIABLES},
            "boot": _read_first_line("/proc/sys/kernel/random/boot_id"),
        }
        directory = args.torch_cache_dir or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ugro"
        )
        path = os.path.join(os.path.expanduser(directory), name)
        return cls(path, python, args.torch_cache_ttl, context)

    def stamp(self, watch):
        files = []
        for path in [self.python, *watch]:
            try:
                info = os.stat(path)
                files.append([path, info.st_ino, info.st_size, info.st_mtime_ns])
            except OSError:
                files.append([path, None])
        encoded = json.dumps([self.context, files], sort_keys=True).encode()
        return hashlib.sha256(encoded).hexdigest()

    def read(self):
        try:
            with open(self.path) as handle:
                entry = json.load(handle)
            env, checked = entry["env"], float(entry["checked_at"])
            if not 0 <= time.time() - checked <= self.ttl:
                return None
            if entry["stamp"] != self.stamp(env["watch"]):
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        env["cached_since"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(checked))
        return env

    def write(self, env):
        # Only a clean answer is kept: an error is worth asking about again next time.
        if set(env) & {"error", "torch_error", "cuda_error"} or "watch" not in env:
            return
        entry = {"checked_at": time.time(), "stamp": self.stamp(env["watch"]), "env": env}
        try:
            directory = os.path.dirname(self.path)
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=directory, prefix=".torch-facts-")
            with os.fdopen(fd, "w") as handle:
                json.dump(entry, handle)
            os.replace(temporary, self.path)
        except OSError:
            pass  # a read-only home: the next probe imports torch again


def _read_first_line(path):
    try:
        with open(path) as handle:
            return handle.readline().strip()
    except OSError:
        return None


def judge(report, env, effective):
    problems = report["problems"]
    if "error" in env:
        problems.append(env["error"])
        return
    if "torch_error" in env:
        problems.append(
            "torch is not importable in {}: {}".format(env.get("executable"), env["torch_error"])
        )
        return
    if effective != "cuda":
        return
    if not report["gpus"]:
        problems.append("no GPU: nvidia-smi {}".format(report["nvidia_smi"]))
    if not env.get("cuda_build"):
        problems.append("torch {} is a CPU-only build".format(env["torch_version"]))
        return
    if "cuda_error" in env:
        problems.append("torch CUDA check failed: {}".format(env["cuda_error"]))
    elif not env.get("cuda_available"):
        problems.append(
            "torch {} (CUDA {}) cannot use the GPU: cuda.is_available() is False".format(
                env["torch_version"], env["cuda_build"]
            )
        )
    coverage = []
    for gpu in report["gpus"]:
        capability = gpu.get("compute_capability") or ""
        covered = arch_covers(env.get("arch_list") or [], capability)
        coverage.append({"gpu": gpu["index"], "capability": capability, "covered": covered})
        if covered is False:
            built_for = " ".join(env.get("arch_list") or []) or "nothing"
            problems.append(
                f"torch {env['torch_version']} (CUDA {env['cuda_build']}) has no kernels for "
                f"GPU {gpu['index']} {gpu['name']} (sm_{capability.replace('.', '')}); "
                f"it was built for {built_for}"
            )
    report["arch_coverage"] = coverage


def arch_covers(arch_list, capability):
    """Whether a torch build's arch list runs on a GPU of this compute capability.

    sm_XY cubins run on the same major version with an equal or higher minor (sm_86 runs on 8.9);
    arch-specific sm_XYa only on XY itself; compute_XY PTX is compiled at load time for any GPU of
    capability XY or newer. Returns None when the capability is unknown.
    """
    match = re.fullmatch(r"(\d+)\.(\d+)", capability or "")
    if not match:
        return None
    major, minor = int(match.group(1)), int(match.group(2))
    for arch in arch_list:
        parsed = re.fullmatch(r"(sm|compute)_(\d+?)(\d)([af]?)", arch)
        if not parsed:
            continue
        kind, amajor, aminor, suffix = (
            parsed.group(1),
            int(parsed.group(2)),
            int(parsed.group(3)),
            parsed.group(4),
        )
        if kind == "sm":
            if suffix == "a" and (amajor, aminor) == (major, minor):
                return True
            if suffix != "a" and amajor == major and aminor <= minor:
                return True
        elif (amajor, aminor) <= (major, minor):
            return True
    return False


def _gb(value):
    return round(value / 1e9, 2) if value is not None else None


def _int(value):
    try:
        return int(float(value))
    except ValueError:
        return None


if __name__ == "__main__":
    sys.exit(main())
