#!/usr/bin/env python3
"""One node's part of `ugro netcheck`: read from stdin by the node's training interpreter.

Every node of the check runs this at once (ugro/netcheck.py starts them over SSH). Each one:
1. finds the interface that routes to the lead node (`ip route get`; the lead's own: the one
   holding its address), with its MTU and link speed;
2. joins a TCP store the lead serves on the rendezvous port (the port a job's torchrun would
   use: a node that cannot reach it could not join a job);
3. listens on a port the kernel picks (gloo and NCCL open their data connections on such ports)
   and connects to every other node's, so that each pair is tried in both directions;
4. takes part in an all-reduce sweep over the real backend (NCCL where every node has a GPU,
   else gloo), on that interface, from 4 KB up until one operation takes long enough.
It prints one JSON line; nothing is written on the node.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any

# Until every node has joined: a slow node (a loaded one, or one held to a share of its CPU)
# may take many seconds to import torch. After that, each wait is short.
JOIN_TIMEOUT_S = 45.0
STORE_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 3.0
# The sweep ends at the first size whose operation takes this long, or at MAX_BYTES, or when it
# has spent SWEEP_BUDGET_S: on a slow link the small sizes already say what it is.
SLOW_OP_S = 0.25
SWEEP_BUDGET_S = 4.0
MIN_BYTES = 4 * 1024
# Each pair's stream: long enough for TCP to reach a LAN's speed.
BANDWIDTH_S = 0.4
MAX_BYTES = 64 * 1024 * 1024


STARTED = time.monotonic()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world", type=int, required=True)
    parser.add_argument("--address", required=True, help="this node's cluster address")
    parser.add_argument("--lead-address", required=True)
    parser.add_argument(
        "--port",
        type=int,
        required=True,
        help="the rendezvous port; the lead takes the first free one from it, as a launch does, "
        "and announces it on its first line",
    )
    parser.add_argument("--addresses", required=True, help="every node's address, in rank order")
    args = parser.parse_args()
    report: dict[str, Any] = {"rank": args.rank, "problems": []}
    if args.rank == 0:
        args.port = free_port(args.lead_address, args.port)
        print(json.dumps({"port": args.port}), flush=True)  # the others are started with it
    report.update(route(args.address, args.lead_address))
    if report.get("interface"):
        os.environ["GLOO_SOCKET_IFNAME"] = report["interface"]
        os.environ["NCCL_SOCKET_IFNAME"] = report["interface"]
    try:
        import torch
        import torch.distributed as dist
    except ImportError as exc:
        report["problems"].append(f"the training environment has no torch: {exc}")
        return emit(report)
    try:
        store = dist.TCPStore(
            args.lead_address,
            args.port,
            args.world,
            is_master=args.rank == 0,
            timeout=timedelta(seconds=JOIN_TIMEOUT_S),
            wait_for_workers=False,
        )
    except Exception as exc:  # any failure to join is the finding
        if args.rank == 0:  # taken since it was found free: the others give up after a while
            report["problems"].append(f"could not listen on port {args.port}: {_first_line(exc)}")
            return emit(report)
        report["rendezvous"] = f"failed: {_first_line(exc)}"
        report["problems"].append(
            f"cannot reach the lead's rendezvous port {args.lead_address}:{args.port}"
        )
        return emit(report)
    report["rendezvous"] = "ok"
    store.add("joined", 1)
    deadline = STARTED + JOIN_TIMEOUT_S
    while int(store.add("joined", 0)) < args.world and time.monotonic() < deadline:
        time.sleep(0.02)
    if int(store.add("joined", 0)) < args.world:
        report["problems"].append(f"not every node joined the check within {JOIN_TIMEOUT_S:.0f} s")
        return leave(store, args.rank, args.world, report)
    addresses = args.addresses.split(",")
    report["peers"] = pairs(store, args.rank, addresses)
    cuda = torch.cuda.is_available()
    store.set(f"cuda/{args.rank}", "1" if cuda else "0")
    everyone = [_get(store, f"cuda/{r}") for r in range(args.world)]
    if None in everyone:
        report["problems"].append("a node left the check before the all-reduce")
        return leave(store, args.rank, args.world, report)
    backend = "nccl" if all(v == "1" for v in everyone) else "gloo"
    report["backend"] = backend
    # Every node must make the same choice, or some would wait in the process group for ever.
    store.set(
        f"pairs_ok/{args.rank}", "1" if all(p.get("ok") for p in report["peers"].values()) else "0"
    )
    all_ok = all(_get(store, f"pairs_ok/{r}") == "1" for r in range(args.world))
    if args.world > 1 and all_ok:
        try:
            report["sweep"] = sweep(torch, dist, store, backend, args.rank, args.world)
        except Exception as exc:  # whatever stopped it is the finding
            report["problems"].append(f"the all-reduce failed: {_first_line(exc)}")
    return leave(store, args.rank, args.world, report)


def leave(store: Any, rank: int, world: int, report: dict[str, Any]) -> int:
    """The lead serves the store: it leaves last, or a slower node's last reads would fail."""
    store.add("finished", 1)
    if rank == 0:
        deadline = time.monotonic() + STORE_TIMEOUT_S
        while int(store.add("finished", 0)) < world and time.monotonic() < deadline:
            time.sleep(0.02)
    return emit(report)


def free_port(address: str, first: int) -> int:
    """The first port from `first` that this node can listen on (a running job's rendezvous
    holds its own), as the launch's preflight picks the job's."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for port in range(first, min(first + 100, 65536)):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((address, port))
                return port
            except OSError:
                continue
    return first


def emit(report: dict[str, Any]) -> int:
    print(json.dumps(report), flush=True)
    # The process group's threads may still hold sockets of peers that left: leave at once.
    os._exit(0)


def route(address: str, lead: str) -> dict[str, Any]:
    """The interface this node reaches the lead by, its MTU and speed (Mb/s, where known)."""
    found: dict[str, Any] = {"interface": None, "mtu": None, "speed_mbps": None}
    device = None
    try:
        done = subprocess.run(
            ["ip", "-j", "route", "get", lead], capture_output=True, text=True, timeout=5
        )
        routes = json.loads(done.stdout or "[]") if done.returncode == 0 else []
        device = routes[0].get("dev") if routes else None
        if device == "lo":  # the lead itself: the interface that holds its address
            device = _holding(address)
    except (OSError, ValueError, subprocess.SubprocessError, IndexError, AttributeError):
        device = _holding(address)
    if not device:
        return found
    found["interface"] = device
    found["mtu"] = _read_int(f"/sys/class/net/{device}/mtu")
    speed = _read_int(f"/sys/class/net/{device}/speed")
    found["speed_mbps"] = speed if speed and speed > 0 else None
    return found


def _holding(address: str) -> str | None:
    try:
        done = subprocess.run(
            ["ip", "-j", "addr", "show"], capture_output=True, text=True, timeout=5
        )
        for link in json.loads(done.stdout or "[]"):
            for entry in link.get("addr_info") or []:
                if entry.get("local") == address:
                    return str(link.get("ifname"))
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    return None


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None  # a virtual or wireless link may not say its speed


def pairs(store: Any, rank: int, addresses: list[str]) -> dict[str, Any]:
    """Every pair of nodes, one at a time: the lower rank connects to the higher one's port
    (one the kernel picked, as gloo's and NCCL's are) and streams to it for BANDWIDTH_S; the
    receiver counts what arrived. Both ends report the pair; the receiver its throughput."""
    family = socket.AF_INET6 if ":" in addresses[rank] else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind((addresses[rank], 0))
    listener.listen(len(addresses))
    store.set(f"listen/{rank}", str(listener.getsockname()[1]))
    results: dict[str, Any] = {}
    turns = [(a, b) for a in range(len(addresses)) for b in range(a + 1, len(addresses))]
    for turn, (sender, receiver) in enumerate(turns):
        if rank == sender:
            port = _get(store, f"listen/{receiver}")
            results[str(receiver)] = _send(addresses[receiver], port)
            store.set(f"sent/{turn}", json.dumps(results[str(receiver)]))
        elif rank == receiver:
            results[str(sender)] = _receive(listener, store, f"sent/{turn}")
            store.set(f"received/{turn}", json.dumps(results[str(sender)]))
        else:
            continue
        # Both ends of this turn are done before either starts the next one.
        other = f"received/{turn}" if rank == sender else f"sent/{turn}"
        seen = _get(store, other)
        peer = str(receiver if rank == sender else sender)
        if seen is None:
            results[peer].update(ok=False, error="the other end never finished")
        else:
            theirs = json.loads(seen)
            results[peer]["ok"] = bool(results[peer].get("ok") and theirs.get("ok"))
            for key in ("mbps", "connect_ms", "error"):
                results[peer].setdefault(key, theirs.get(key))
    listener.close()
    return results


def _send(address: str, port: str | None) -> dict[str, Any]:
    if port is None:
        return {"ok": False, "error": "it never published its port"}
    began = time.perf_counter()
    try:
        conn = socket.create_connection((address, int(port)), timeout=CONNECT_TIMEOUT_S)
    except OSError as exc:
        return {"ok": False, "port": int(port), "error": f"cannot connect: {exc}"}
    result = {
        "ok": True,
        "port": int(port),
        "connect_ms": round((time.perf_counter() - began) * 1000, 2),
    }
    chunk = b"\0" * 65536
    deadline = time.monotonic() + BANDWIDTH_S + CONNECT_TIMEOUT_S
    conn.settimeout(0.5)
    with conn:
        while time.monotonic() < deadline:
            try:
                conn.sendall(chunk)
            except TimeoutError:
                continue
            except OSError:
                break  # the receiver has counted enough and closed
    return result


def _receive(listener: socket.socket, store: Any, sender_done: str) -> dict[str, Any]:
    """Bytes that arrived in BANDWIDTH_S from the first one, as megabits per second. Waits for
    the connection until the sender says it has given up (its result is in the store)."""
    listener.settimeout(0.1)
    deadline = time.monotonic() + CONNECT_TIMEOUT_S + STORE_TIMEOUT_S
    while True:
        try:
            conn, _ = listener.accept()
            break
        except TimeoutError:
            if store.check([sender_done]) or time.monotonic() > deadline:
                return {"ok": False, "error": "no connection came"}
        except OSError as exc:
            return {"ok": False, "error": f"no connection came: {exc}"}
    with conn:
        conn.settimeout(CONNECT_TIMEOUT_S)
        received, first = 0, None
        try:
            while True:
                data = conn.recv(1 << 20)
                if not data:
                    break
                now = time.perf_counter()
                first = first or now
                received += len(data)
                if now - first >= BANDWIDTH_S:
                    break
        except OSError:
            pass
        elapsed = (time.perf_counter() - first) if first else 0.0
    if not received or elapsed <= 0:
        return {"ok": False, "error": "nothing arrived"}
    return {"ok": True, "mbps": round(received * 8 / elapsed / 1e6, 2)}


def _get(store: Any, key: str) -> str | None:
    try:
        store.wait([key], timedelta(seconds=STORE_TIMEOUT_S))
        return store.get(key).decode()
    except Exception:  # a node that never wrote it is the finding
        return None


def sweep(torch: Any, dist: Any, store: Any, backend: str, rank: int, world: int) -> list[dict]:
    """All-reduce times by size: each the slowest rank's mean over a few operations."""
    from datetime import timedelta

    dist.init_process_group(
        backend,
        store=dist.PrefixStore("sweep", store),
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=30),
    )
    device = torch.device("cuda", 0) if backend == "nccl" else torch.device("cpu")
    results = []
    size = MIN_BYTES
    started = time.perf_counter()
    while size <= MAX_BYTES:
        tensor = torch.ones(size // 4, dtype=torch.float32, device=device)
        dist.all_reduce(tensor)  # warm-up: connections, buffers
        repeats = 5 if size < 1024 * 1024 else 3
        _sync(torch, device)
        began = time.perf_counter()
        for _ in range(repeats):
            dist.all_reduce(tensor)
        _sync(torch, device)
        took = torch.tensor([(time.perf_counter() - began) / repeats], device=device)
        dist.all_reduce(took, op=dist.ReduceOp.MAX)  # the same figure, and decision, on every rank
        seconds = float(took.item())
        algbw = size / seconds
        results.append(
            {
                "bytes": size,
                "seconds": round(seconds, 6),
                "algbw_gbps": round(algbw / 1e9, 6),
                # nccl-tests' bus bandwidth: what each link carried, comparable across sizes
                # and node counts (a ring all-reduce moves 2(n-1)/n of the data per rank).
                "busbw_gbps": round(algbw * 2 * (world - 1) / world / 1e9, 6),
            }
        )
        elapsed = torch.tensor([time.perf_counter() - started], device=device)
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        if seconds >= SLOW_OP_S or float(elapsed.item()) >= SWEEP_BUDGET_S:
            break
        size *= 4
    return results


def _sync(torch: Any, device: Any) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
