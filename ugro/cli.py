"""The `ugro` command: parsing, dispatch and exit codes.

Imports are deferred into the commands so that `ugro --help` starts in a fraction of a second
(neither Ansible, rich, pydantic nor torch is loaded to print help). Every UgroError is caught
once in `main`, printed as one line, and turned into its exit code; a traceback only ever goes
to the log file.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import TYPE_CHECKING, Any

import click

from ugro.errors import ExitCode, UgroError, UsageError

if TYPE_CHECKING:
    from ugro.config import Cluster

log = logging.getLogger("ugro.cli")

_JOB_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_EXTRA_VAR = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)


class _State:
    def __init__(self, config: str | None, verbose: int) -> None:
        self.config_path = config
        self.verbose = verbose
        self._cluster: Cluster | None = None

    def cluster(self) -> Cluster:
        """Load cluster.yaml once, and start the log files the seed's layout names."""
        if self._cluster is None:
            from ugro.config import load_cluster
            from ugro.logsetup import attach_file

            self._cluster = load_cluster(self.config_path)
            logs = self._cluster.paths.logs
            attach_file(logs / "agent.log")
            attach_file(logs / "health.log", logger="ugro.health", level=logging.INFO)
            log.debug("cluster %s from %s", self._cluster.name, self._cluster.describe())
        return self._cluster


pass_state = click.make_pass_decorator(_State)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config",
    metavar="PATH",
    help="cluster.yaml to use (default: $UGRO_CONFIG, ./config/cluster.yaml, "
    "~/.config/ugro/cluster.yaml, else the built-in local cluster).",
)
@click.option("-v", "--verbose", count=True, help="More output (-vv for debug).")
@click.version_option(package_name="ugro")
@click.pass_context
def cli(ctx: click.Context, config: str | None, verbose: int) -> None:
    """UGRO: a few SSH-reachable GPU machines as one training cluster.

    \b
    Quick start:
      ugro health              check every node (GPU, torch, disk, SSH)
      ugro inventory           show the nodes cluster.yaml describes
      ugro status              the last known state of the cluster
      ugro sandbox up          a 3-node cluster on this machine, to try things on
    """
    from ugro.logsetup import setup_terminal

    setup_terminal(verbose)
    ctx.obj = _State(config, verbose)


# --- health / status / inventory ----------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the full reports as JSON.")
@click.option("--node", "nodes", multiple=True, metavar="NAME", help="Only this node (repeatable).")
@pass_state
def health(state: _State, as_json: bool, nodes: tuple[str, ...]) -> None:
    """Probe every node: SSH, GPUs, torch, disk. Exit 1 if any node is unhealthy."""
    from ugro import health as health_mod
    from ugro.display import RunProgress, console, err_console, health_table
    from ugro.runner import run_playbook

    cluster = state.cluster()
    names = [cluster.node(name).name for name in nodes] or [n.name for n in cluster.nodes]
    with RunProgress("health", len(names)) as progress:
        result = run_playbook(
            cluster,
            "health",
            limit=list(nodes) or None,
            on_event=progress,
        )
    if result.status not in ("successful", "failed") or not result.hosts:
        result.raise_for_status()
    summary = health_mod.summarize(cluster, result, names)
    health_mod.record(cluster, summary)
    if as_json:
        click.echo(json.dumps(summary.to_json(), indent=2, sort_keys=True))
    else:
        console.print(health_table(summary))
        for warning in summary.drift:
            err_console.print(f"[yellow]warning:[/] {warning}")
    sys.exit(ExitCode.OK if summary.healthy else ExitCode.FAILED)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
@pass_state
def status(state: _State, as_json: bool) -> None:
    """The last known state of the cluster (from the last `ugro health`)."""
    from ugro.state import read_json

    cluster = state.cluster()
    data = read_json(cluster.paths.cluster_state)
    if as_json:
        click.echo(json.dumps(data or {}, indent=2, sort_keys=True))
        return
    if not data:
        click.echo(f"No health check recorded yet for {cluster.name}: run `ugro health`.")
        return
    from ugro.display import cluster_state_table, console

    console.print(cluster_state_table(data))


@cli.command()
@click.option(
    "--json", "as_json", is_flag=True, help="Print it as `ansible-inventory --list` does."
)
@pass_state
def inventory(state: _State, as_json: bool) -> None:
    """The Ansible inventory derived from cluster.yaml."""
    from ugro.inventory import inventory_list

    cluster = state.cluster()
    if as_json:
        click.echo(json.dumps(inventory_list(cluster), indent=2, sort_keys=True))
        return
    from ugro.display import console, inventory_table

    console.print(inventory_table(cluster))


# --- run ----------------------------------------------------------------------------------------


def parse_extra_vars(pairs: tuple[str, ...]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for pair in pairs:
        match = _EXTRA_VAR.fullmatch(pair)
        if not match:
            raise UsageError(f"-e {pair!r}: expected key=value with a key like batch_size")
        extra[match.group(1)] = match.group(2)
    return extra


def check_job_name(name: str) -> str:
    if not _JOB_NAME.fullmatch(name) or name in {".", ".."}:
        raise UsageError(
            f"job name {name!r} is not valid; expected 1 to 64 of letters, digits, '_', '.', '-'"
        )
    return name


@cli.command(name="run")
@click.argument("playbook")
@click.argument("job", required=False)
@click.option(
    "-e",
    "--extra-var",
    "extra",
    multiple=True,
    metavar="KEY=VALUE",
    help="Extra variable for the playbook (repeatable).",
)
@click.option("--node", "nodes", multiple=True, metavar="NAME", help="Only this node (repeatable).")
@click.option("--check", is_flag=True, help="Dry run: Ansible's check mode, nothing changes.")
@pass_state
def run_command(
    state: _State,
    playbook: str,
    job: str | None,
    extra: tuple[str, ...],
    nodes: tuple[str, ...],
    check: bool,
) -> None:
    """Run one of ugro's playbooks (or your own) against the cluster.

    PLAYBOOK is a name such as `health`, or a path to a .yml file; JOB, when given, is passed to
    the playbook as `ugro_job_name`.
    """
    from ugro import assets
    from ugro.display import RunProgress
    from ugro.runner import run_playbook

    extravars = parse_extra_vars(extra)
    if job is not None:
        extravars["ugro_job_name"] = check_job_name(job)
    assets.playbook_path(playbook)  # an unknown playbook is a usage error before anything runs
    cluster = state.cluster()
    for name in nodes:
        cluster.node(name)
    hosts = len(nodes) or len(cluster.nodes)
    with RunProgress(playbook, hosts) as progress:
        result = run_playbook(
            cluster,
            playbook,
            extravars=extravars,
            limit=list(nodes) or None,
            check=check,
            on_event=progress,
        )
    for outcome in sorted(result.hosts.values(), key=lambda h: h.name):
        verdict = "unreachable" if outcome.unreachable else "failed" if outcome.failed else "ok"
        detail = f": {outcome.message}" if outcome.message and verdict != "ok" else ""
        click.echo(f"{outcome.name}: {verdict} (ok={outcome.ok} changed={outcome.changed}){detail}")
    click.echo(f"artifacts: {result.artifact_dir}")
    result.raise_for_status()


# --- sandbox ------------------------------------------------------------------------------------


@cli.group()
def sandbox() -> None:
    """A real multi-host cluster on this machine (network namespaces + sshd). Needs root."""


_name_option = click.option("--name", default="ugro", show_default=True, help="Sandbox name.")


@sandbox.command(name="up")
@_name_option
@click.option("--nodes", default=3, show_default=True, type=int, help="Nodes, master included.")
@click.option("--subnet", default="10.213.0.0/24", show_default=True, help="Private IPv4 subnet.")
@click.option(
    "--wheelhouse",
    metavar="DIR",
    envvar="UGRO_WHEELHOUSE",
    help="Extra wheel source for the nodes' environment (air-gapped machines) [$UGRO_WHEELHOUSE].",
)
@click.option(
    "--package",
    "packages",
    multiple=True,
    metavar="SPEC",
    help="Packages for the nodes' environment (default: torch at this machine's version).",
)
def sandbox_up(
    name: str, nodes: int, subnet: str, wheelhouse: str | None, packages: tuple[str, ...]
) -> None:
    """Bring a sandbox up and write its cluster.yaml."""
    import time

    from ugro.sandbox import lifecycle

    started = time.monotonic()
    box = lifecycle.up(
        name,
        nodes=nodes,
        subnet=subnet,
        wheelhouse=wheelhouse,
        packages=list(packages) or None,
        echo=lambda line: click.echo(line, err=True),
    )
    click.echo(
        f"Sandbox {box.name} is up: {len(box.nodes) + 1} nodes on {box.subnet} "
        f"in {time.monotonic() - started:.1f}s."
    )
    click.echo(f"Cluster file: {box.cluster_file}")
    click.echo(f"Try it:       ugro --config {box.cluster_file} health")


@sandbox.command(name="down")
@_name_option
@click.option("--purge-env", is_flag=True, help="Also delete the nodes' shared Python environment.")
def sandbox_down(name: str, purge_env: bool) -> None:
    """Remove everything the sandbox made (safe to repeat)."""
    from ugro.sandbox import lifecycle

    removed = lifecycle.down(name, purge_env=purge_env)
    click.echo(f"Sandbox {name} is down: removed {removed.describe()}.")


@sandbox.command(name="status")
@_name_option
@click.option("--json", "as_json", is_flag=True)
def sandbox_status(name: str, as_json: bool) -> None:
    """Nodes, addresses, users, and whether each sshd answers. Exit 1 if one does not."""
    from dataclasses import asdict

    from ugro.sandbox import lifecycle

    box, rows = lifecycle.status(name)
    if as_json:
        click.echo(
            json.dumps({"sandbox": asdict(box), "nodes": [asdict(r) for r in rows]}, indent=2)
        )
    else:
        from ugro.display import console, sandbox_table

        console.print(sandbox_table(box, rows))
        click.echo(f"Cluster file: {box.cluster_file}")
    if any(row.sshd != "answers" for row in rows):
        sys.exit(ExitCode.FAILED)


@sandbox.command(name="fault")
@click.argument("node")
@click.argument("action", type=click.Choice(["down", "up", "partition", "heal", "slow"]))
@_name_option
@click.option("--delay-ms", type=click.IntRange(min=0), help="slow: added delay each way (netem).")
@click.option("--rate-kbit", type=click.IntRange(min=0), help="slow: bandwidth cap (tbf).")
def sandbox_fault(
    name: str, node: str, action: str, delay_ms: int | None, rate_kbit: int | None
) -> None:
    """Inject a fault: NODE down|up, partition|heal, slow --delay-ms N / --rate-kbit N."""
    from ugro.sandbox import lifecycle

    lifecycle.fault(name, node, action, delay_ms=delay_ms, rate_kbit=rate_kbit)
    click.echo(f"{node}: {action} done.")


# --- entry point --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="ugro", standalone_mode=False)
    except UgroError as exc:
        log.debug("ugro error", exc_info=True)
        click.echo(f"ugro: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("ugro: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(ExitCode.USAGE)
    except KeyboardInterrupt:
        click.echo("ugro: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        log.exception("unexpected error")
        click.echo(
            f"ugro: internal error: {type(exc).__name__}: {exc} (details in the log)", err=True
        )
        sys.exit(ExitCode.FAILED)
    sys.exit(ExitCode.OK)
