"""UGRO deployment control on one node: start a deployment's server, watch it, stop it.

Stdlib only, Python 3.8+. The ugro_serve role copies it (with ugro_jobprocs.py beside it) into
the deployment's code/ directory and runs `start`; the deployment's controller on the master
runs `watch` (one JSON line a second: the node's heartbeat, with the server's health and
figures) and `start` or `stop` again over SSH.

The server is started detached (a session of its own) and tagged UGRO_DEPLOYMENT=<name> in its
environment, which is how `stop` finds it and everything it started, whatever became of its
pid file. The deployment's key is read from its file (mode 0600) and sent only in the
Authorization header of the health and figures requests, never printed.
"""

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import urllib.error
import urllib.request

from ugro_jobprocs import DEPLOYMENT_TAG, alive, stop_pids, tagged_processes

# vLLM reads its key from this variable (never its command line, which `ps` shows).
VLLM_KEY_VARIABLE = "VLLM_API_KEY"


def main(argv=None):
    parser = argparse.ArgumentParser(description="UGRO deployment control on this node")
    parser.add_argument("action", choices=("start", "stop", "state", "watch"))
    parser.add_argument("--dir", required=True, help="the deployment's directory on this node")
    parser.add_argument("--python", default=sys.executable, help="start: the interpreter")
    parser.add_argument("--grace", type=float, default=10.0, help="stop: seconds before SIGKILL")
    parser.add_argument("--interval", type=float, default=1.0, help="watch: seconds per report")
    args = parser.parse_args(argv)
    try:
        spec = _read_json(os.path.join(args.dir, "spec.json"))
    except (OSError, ValueError) as exc:
        _report({"error": f"no readable spec.json in {args.dir}: {exc}"})
        return 2
    if args.action == "start":
        return start(args.dir, spec, args.python)
    if args.action == "stop":
        _report(stop(spec["name"], args.grace))
        return 0
    if args.action == "watch":
        return watch(args.dir, spec, args.interval)
    _report(state(args.dir, spec))
    return 0


def _report(data):
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def _read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


# --- starting -----------------------------------------------------------------------------------


def start(directory, spec, python):
    """Start the server unless it runs; refuse a port that something else holds."""
    running = server_pids(spec["name"])
    if running:
        _report({"started": False, "pid": running[0], "running": True})
        return 0
    problem = port_taken(spec["host"], int(spec["port"]))
    if problem:
        _report({"error": problem})
        return 2
    environment = dict(os.environ)
    environment[DEPLOYMENT_TAG[:-1]] = spec["name"]
    environment["PYTHONUNBUFFERED"] = "1"
    command = [python, os.path.join(directory, "code", "ugro_serve.py"), "--spec"]
    command.append(os.path.join(directory, "spec.json"))
    if spec.get("engine") == "vllm":
        command = [python, "-m", "vllm.entrypoints.openai.api_server", *spec["vllm_args"]]
        key = _key(spec)
        if key:
            environment[VLLM_KEY_VARIABLE] = key
    log = open(os.path.join(directory, "server.log"), "ab")  # noqa: SIM115 - the child keeps it
    try:
        process = subprocess.Popen(
            command,
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=environment,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        log.close()
    with open(os.path.join(directory, "pid"), "w") as handle:
        handle.write(str(process.pid))
    _report({"started": True, "pid": process.pid})
    return 0


def port_taken(host, port):
    """Why the server could not listen on host:port, or None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    # As the server binds (uvicorn sets it too): a port whose last connections linger in
    # TIME_WAIT after a stop is free to listen on again.
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind((host, port))
    except OSError as exc:
        return f"port {port} on {host} is not free ({exc.strerror or exc})"
    finally:
        probe.close()
    return None


def _key(spec):
    if not spec.get("key_file"):
        return None
    try:
        with open(spec["key_file"], encoding="utf-8") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


# --- looking ------------------------------------------------------------------------------------


def server_pids(name):
    return [p["pid"] for p in tagged_processes(name, tag=DEPLOYMENT_TAG)]


def state(directory, spec):
    """The heartbeat: whether the server lives, what /health says, and its figures."""
    pid = _read_int(os.path.join(directory, "pid"))
    report = {
        "beat": True,
        "pid": pid,
        "alive": bool(pid and alive(pid)),
        "processes": len(server_pids(spec["name"])),
    }
    if report["alive"]:
        # vLLM's /health answers before the model can serve; its /v1/models only once it can.
        health, _ = _get(spec, "/v1/models" if spec.get("engine") == "vllm" else "/health")
        report["health"] = health
        if health == 200 and spec.get("engine") != "vllm":
            code, stats = _get(spec, "/ugro/stats")
            if code == 200:
                report["stats"] = stats
    else:
        report["log_tail"] = _tail(os.path.join(directory, "server.log"), 5)
    return report


def _get(spec, path):
    host = spec["host"]
    host = f"[{host}]" if ":" in host else host
    url = "http://{}:{}{}".format(host, spec["port"], path)  # our own server: always http
    request = urllib.request.Request(url)  # noqa: S310
    key = _key(spec)
    if key:
        request.add_header("Authorization", "Bearer " + key)
    try:
        with urllib.request.urlopen(request, timeout=2) as answer:  # noqa: S310 - our own URL
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError):
        return None, None


def watch(directory, spec, interval):
    """A heartbeat line every `interval` seconds until stdin closes (the master hung up)."""
    while True:
        _report(state(directory, spec))
        readable, _, _ = select.select([sys.stdin], [], [], interval)
        if readable and not os.read(sys.stdin.fileno(), 4096):
            return 0


# --- stopping -----------------------------------------------------------------------------------


def stop(name, grace):
    """Every process of the deployment ended and checked gone; GPU memory checked released."""
    first = server_pids(name)
    return stop_pids(first, lambda: server_pids(name), grace)


def _read_int(path):
    try:
        with open(path) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def _tail(path, lines):
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 8192))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


if __name__ == "__main__":
    sys.exit(main())
