"""`ugro daemon run|start|stop|status|install`: the long-running part of UGRO (ugro.daemon)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path

import click

from ugro.commands.context import Context
from ugro.core.errors import ExitCode, UsageError
from ugro.daemon import service
from ugro.records.daemon_files import DaemonFiles, already_running


def _files(ctx: Context) -> DaemonFiles:
    return DaemonFiles(ctx.cluster().paths.data)


def config_argument(ctx: Context) -> str | None:
    """The cluster.yaml the daemon must load, as an absolute path (None: the built-in one)."""
    source = ctx.cluster().source
    return str(Path(source).resolve()) if source else None


def run(ctx: Context) -> ExitCode:
    # Only `daemon run` imports the daemon's loop (and with it the dashboard's web stack).
    from ugro.daemon.loop import Daemon

    logging.getLogger("ugro").setLevel(logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("ugro").addHandler(handler)
    Daemon(ctx.cluster(), config_argument(ctx)).run()
    return ExitCode.OK


def start(ctx: Context) -> ExitCode:
    files = _files(ctx)
    if files.alive():
        click.echo(already_running(files))
        return ExitCode.OK
    pid = service.spawn(files, config_argument(ctx))
    click.echo(f"The daemon runs (pid {pid}); its log: {files.log_path}")
    return ExitCode.OK


def stop(ctx: Context) -> ExitCode:
    pid = service.stop(_files(ctx))
    if pid is None:
        click.echo("No daemon runs for this cluster.")
    else:
        click.echo(f"The daemon (pid {pid}) stopped; running jobs go on with their controllers.")
    return ExitCode.OK


def status(ctx: Context, *, as_json: bool) -> ExitCode:
    files = _files(ctx)
    state = files.live_state()
    alive = state is not None
    now = time.time()
    started = state.started_at if state else None
    updated = state.updated_at if state else None
    uptime = round(now - started, 1) if started else 0.0
    age = round(now - updated, 1) if updated else None
    summary = {
        "running": alive,
        "pid": state.pid if state else None,
        "uptime_s": uptime,
        "activity": state.activity if state else None,
        "paused": state.paused if state else None,
        "queued": state.waiting if state else 0,
        "state_age_s": age,
        "last_probe_at": state.probes.last_light if state else None,
        "dashboard": state.dashboard if state else None,
        "log": str(files.log_path),
        "data": str(files.dir.parent),
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
    elif not alive:
        click.echo(f"No daemon runs for {files.dir.parent}: `ugro daemon start` starts one.")
    else:
        click.echo(
            f"The daemon runs: pid {summary['pid']}, up {_duration(uptime)}, "
            f"{summary['activity']}{' (queue paused)' if summary['paused'] else ''}; "
            f"its state is {age or 0:.0f}s old; log: {summary['log']}"
        )
        if summary["dashboard"]:
            token = files.token_path
            click.echo(
                f"Its dashboard: {summary['dashboard']}"
                + (f" (token in {token})" if token.exists() else "")
            )
    return ExitCode.OK if alive else ExitCode.FAILED


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


# --- the systemd unit ---------------------------------------------------------------------------


def unit_name(ctx: Context) -> str:
    """ugro-<cluster>.service, with a short hash of the data directory: one per project."""
    cluster = ctx.cluster()
    slug = re.sub(r"[^a-z0-9]+", "-", cluster.name.lower()).strip("-") or "cluster"
    digest = hashlib.sha256(str(cluster.paths.data).encode()).hexdigest()[:8]
    return f"ugro-{slug[:40]}-{digest}.service"


def _quote(arg: str) -> str:
    """One ExecStart argument as systemd reads it: quoted, with its specifiers escaped."""
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def unit_text(ctx: Context) -> str:
    cluster = ctx.cluster()
    config = config_argument(ctx)
    argv = [
        sys.executable,
        "-m",
        "ugro",
        *(["--config", config] if config else []),
        "daemon",
        "run",
    ]
    return "\n".join(
        [
            "[Unit]",
            f"Description=UGRO daemon for {cluster.name} ({cluster.paths.data})",
            "After=network-online.target",
            "Wants=network-online.target",
            "",
            "[Service]",
            "Type=simple",
            "ExecStart=" + " ".join(_quote(a) for a in argv),
            "WorkingDirectory=" + str(cluster.paths.project_root).replace("%", "%%"),
            "Environment=PYTHONUNBUFFERED=1",
            # Jobs the daemon starts get its environment: a Hugging Face token goes in a file
            # only you can read (HF_TOKEN=...), never into the unit.
            "# EnvironmentFile=%h/.config/ugro/daemon.env",
            "Restart=on-failure",
            "RestartSec=5",
            # Each job's controller is a process of its own that outlives the daemon: a stop or
            # a restart of the unit must end the daemon only, never the jobs it started.
            "KillMode=process",
            "TimeoutStopSec=30",
            "",
            "[Install]",
            "WantedBy=default.target",
            "",
        ]
    )


def install(ctx: Context, *, print_only: bool) -> ExitCode:
    text = unit_text(ctx)
    name = unit_name(ctx)
    systemd = Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None
    if print_only or not systemd:
        if not print_only:
            click.echo(
                f"# systemd does not run here (PID 1 is not systemd): the unit {name} is "
                "printed, not installed; `ugro daemon start` runs the daemon without it.",
                err=True,
            )
        click.echo(text, nl=False)
        return ExitCode.OK
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    path = config_home / "systemd" / "user" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == text:
        click.echo(f"{path} is up to date.")
    else:
        path.write_text(text)
        click.echo(f"Wrote {path}.")
    click.echo(
        f"Start it now and at every login: systemctl --user daemon-reload && "
        f"systemctl --user enable --now {name}\n"
        "To keep it running when you are logged out: loginctl enable-linger"
    )
    if not os.access(sys.executable, os.X_OK):
        raise UsageError(f"{sys.executable} is not executable by this user; the unit cannot run it")
    return ExitCode.OK
