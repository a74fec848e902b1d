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
    from ugro.resolved import ResolvedCluster

log = logging.getLogger("ugro.cli")

_EXTRA_VAR = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)


class _State:
    def __init__(self, ctx: click.Context, config: str | None, verbose: int) -> None:
        self.ctx = ctx
        self.config_path = config
        self.verbose = verbose
        self._cluster: Cluster | None = None
        self._resolved: ResolvedCluster | None = None

    def cluster(self) -> Cluster:
        """Load cluster.yaml once, and start the log files the seed's layout names."""
        if self._cluster is None:
            from ugro import resolved

            self._cluster, self._resolved = resolved.load_full(self.config_path)
            self._attach_logs(self._resolved)
        return self._cluster

    def resolved(self) -> ResolvedCluster:
        """The cluster's name and directories, from ugro.resolved's cache when it is current.

        For commands that only read the master's files: they start without pydantic.
        """
        if self._resolved is None:
            from ugro import resolved

            self._resolved = resolved.load(self.config_path)
            self._attach_logs(self._resolved)
        return self._resolved

    @staticmethod
    def _attach_logs(cluster: ResolvedCluster) -> None:
        from ugro.logsetup import attach_file

        logs = cluster.paths.logs
        attach_file(logs / "agent.log")
        attach_file(logs / "health.log", logger="ugro.health", level=logging.INFO)
        attach_file(logs / "launcher.log", logger="ugro.launch", level=logging.INFO)
        log.debug("cluster %s from %s", cluster.name, cluster.describe())


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
    ctx.obj = _State(ctx, config, verbose)


# --- health / status / inventory ----------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the full reports as JSON.")
@click.option("--node", "nodes", multiple=True, metavar="NAME", help="Only this node (repeatable).")
@click.option(
    "--deep",
    is_flag=True,
    help="Import torch on every node even if its facts are cached (after a driver change).",
)
@pass_state
def health(state: _State, as_json: bool, nodes: tuple[str, ...], deep: bool) -> None:
    """Probe every node: SSH, GPUs, torch, disk. Exit 1 if any node is unhealthy.

    Torch's facts are cached on each node while its environment, GPUs and driver are unchanged
    (an hour at most): importing torch costs seconds and a CUDA context on every GPU.
    """
    from ugro import health as health_mod
    from ugro.display import RunProgress, console, err_console, health_table
    from ugro.runner import run_playbook

    # The resolved cluster (cached while cluster.yaml is unchanged) is all a health run needs.
    cluster = state.resolved()
    names = [cluster.check_node(name) for name in nodes] or cluster.node_names
    with RunProgress("health", len(names)) as progress:
        result = run_playbook(
            cluster,
            "health",
            extravars={"ugro_health_deep": True} if deep else None,
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
@click.option("--recent", default=10, show_default=True, help="How many recent jobs to show.")
@pass_state
def status(state: _State, as_json: bool, recent: int) -> None:
    """The cluster's last known health, and running and recent jobs (live from the nodes)."""
    from ugro.jobs import Jobs
    from ugro.state import read_json

    cluster = state.resolved()
    data = read_json(cluster.paths.cluster_state)
    records = list(Jobs(cluster).records().values())[:recent]
    # Running jobs are asked about on their nodes; finished ones are as the history says.
    if any(r.state in ("launching", "running") for r in records):
        from ugro.launch import refresh

        records = [
            refresh(cluster, r) if r.state in ("launching", "running") else r for r in records
        ]
    if as_json:
        click.echo(
            json.dumps(
                {"cluster": data or {}, "jobs": [r.__dict__ for r in records]},
                indent=2,
                sort_keys=True,
            )
        )
        return
    from ugro.display import cluster_state_table, console, jobs_table

    if data:
        console.print(cluster_state_table(data))
    else:
        click.echo(f"No health check recorded yet for {cluster.name}: run `ugro health`.")
    if records:
        running = [r for r in records if r.state in ("launching", "running")]
        title = f"jobs ({len(running)} running, {len(records)} most recent shown)"
        console.print(jobs_table(records, title=title))
    else:
        click.echo("No jobs yet: `ugro launch --name exp1` starts one.")


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
    from ugro.jobs import check_name  # deferred: the CLI starts without pydantic

    return check_name(name)


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
        check_job_name(job)
    # An unknown playbook is a usage error before anything runs.
    path = assets.playbook_path(playbook)
    cluster = state.cluster()
    if job is not None and path.parent == assets.project_dir() / "playbooks":
        if path.stem == "launch":
            # `ugro run launch exp1` is `ugro launch --name exp1`: a job needs an id, a directory
            # and a history, not just a playbook run.
            state.ctx.invoke(launch_command, name=job, nodes=",".join(nodes) or None, dry_run=check)
            return
        if path.stem in ("stop", "status", "collect"):
            from ugro.jobs import Jobs

            record = Jobs(cluster).resolve(job)
            extravars["ugro_job_id"] = record.job_id
            extravars.setdefault(
                "ugro_collect_dest", str(Jobs(cluster).experiment_dir(record.job_id))
            )
            nodes = nodes or tuple(Jobs(cluster).nodes(record))
    if job is not None:
        extravars.setdefault("ugro_job_name", job)
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


# --- jobs ---------------------------------------------------------------------------------------


@cli.command()
@click.option("--node", "nodes", multiple=True, metavar="NAME", help="Only this node (repeatable).")
@pass_state
def sync(state: _State, nodes: tuple[str, ...]) -> None:
    """Give every node the scripts and its training environment; then check them."""
    from ugro import health as health_mod
    from ugro.display import RunProgress, console, health_table
    from ugro.runner import run_playbook

    cluster = state.cluster()
    names = [cluster.node(n).name for n in nodes] or [n.name for n in cluster.nodes]
    with RunProgress("sync", len(names)) as progress:
        result = run_playbook(cluster, "sync", limit=list(nodes) or None, on_event=progress)
    if result.hosts:
        summary = health_mod.summarize(state.resolved(), result, names)
        health_mod.record(state.resolved(), summary)
        console.print(health_table(summary))
    result.raise_for_status()
    changed = {h.name: h.changed for h in result.hosts.values() if h.changed}
    if changed:
        click.echo("changed: " + ", ".join(f"{n} ({c} tasks)" for n, c in sorted(changed.items())))
    else:
        click.echo("no changes: every node was already in sync")


@cli.command(name="launch")
@click.option("--name", required=True, help="Job name (letters, digits, '_', '.', '-').")
@click.option("--model", help="Model: hub name, local directory, or tiny-llama.")
@click.option("--dataset", help="Data set: hub name, local .txt file, or builtin.")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), help="Epochs.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Learning rate.")
@click.option(
    "--script", help="Any torchrun-compatible script (default scripts/train_production.py)."
)
@click.option("--nodes", metavar="A,B", help="Run on these nodes only (the master among them).")
@click.option("--detach", is_flag=True, help="Start the job and return at once.")
@click.option(
    "--dry-run", is_flag=True, help="Check mode: print each node's command, start nothing."
)
@click.option("--allow-drift", is_flag=True, help="Launch even if the nodes' environments differ.")
@click.option("--verbose", is_flag=True, help="Print every metrics record while following.")
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
@pass_state
def launch_command(
    state: _State,
    name: str,
    model: str | None = None,
    dataset: str | None = None,
    epochs: float | None = None,
    lr: float | None = None,
    script: str | None = None,
    nodes: str | None = None,
    detach: bool = False,
    dry_run: bool = False,
    allow_drift: bool = False,
    verbose: bool = False,
    script_args: tuple[str, ...] = (),
) -> None:
    """Train across the cluster, then follow the job until it ends (Ctrl-C detaches).

    Arguments after `--` go to the script.
    """
    import os

    from ugro import launch as launcher
    from ugro.display import RunProgress, TrainingProgress, console, results_table
    from ugro.jobs import Jobs, summarize

    check_job_name(name)
    cluster = state.resolved()
    seed_options = {"--model": model, "--dataset": dataset, "--epochs": epochs, "--lr": lr}
    if script and any(v is not None for v in seed_options.values()):
        raise UsageError(
            "--model/--dataset/--epochs/--lr are train_production.py's options; "
            "pass your script's own options after --"
        )
    args = (
        tuple(script_args)
        if script
        else launcher.training_args(cluster, overrides=seed_options, extra=tuple(script_args))
    )
    request = launcher.LaunchRequest(
        name=name,
        script=script or launcher.DEFAULT_SCRIPT,
        args=args,
        nodes=tuple(n for n in (nodes or "").split(",") if n),
        allow_drift=allow_drift,
        hf_token=os.environ.get("HF_TOKEN") or None,
    )
    node_count = len(request.nodes) or len(cluster.node_names)
    with RunProgress("launch (dry run)" if dry_run else "launch", node_count) as progress:
        result = launcher.launch(cluster, request, dry_run=dry_run, on_event=progress)
    if dry_run:
        import shlex

        click.echo(f"Dry run of {result.job_id}: nothing was started. Each node would run:")
        for node in result.nodes:
            click.echo(f"  {node}: {shlex.join(result.commands.get(node, []))}")
        return
    click.echo(f"Launched {result.job_id} on {', '.join(result.nodes)}.")
    if detach:
        click.echo(f"Follow it with `ugro logs {name} --follow`; stop it with `ugro stop {name}`.")
        return
    try:
        with TrainingProgress(result.job_id, verbose=verbose) as progress:
            record = launcher.follow(cluster, result.job_id, on_metrics=progress)
    except KeyboardInterrupt:
        click.echo(
            f"\nDetached from {result.job_id}; it keeps running. "
            f"Follow again with `ugro logs {name} --follow`, stop it with `ugro stop {name}`."
        )
        return
    jobs = Jobs(cluster)
    console.print(results_table(summarize(jobs, record)))
    failure = record.detail.get("failure")
    if record.state != "succeeded":
        if failure:
            where = failure.get("node", "?") + (
                f" rank {failure['rank']}" if "rank" in failure else ""
            )
            click.echo(
                f"{record.job_id} failed on {where} (exit {failure.get('exit_code', '?')}); "
                "last lines of its log:",
                err=True,
            )
            for line in failure.get("tail") or []:
                click.echo(f"  {line}", err=True)
        sys.exit(ExitCode.FAILED)


@cli.command()
@click.argument("job")
@click.option("--rank", type=click.IntRange(min=0), help="Only this global rank.")
@click.option("--follow", "-f", "follow_", is_flag=True, help="Keep printing until the job ends.")
@pass_state
def logs(state: _State, job: str, rank: int | None, follow_: bool) -> None:
    """A job's per-rank logs (merged and prefixed by node and rank, or one rank's)."""
    import time

    from ugro.jobs import Jobs
    from ugro.logview import LogView

    jobs = Jobs(state.resolved())
    record = jobs.resolve(job)
    nodes = jobs.nodes(record)
    running = record.state in ("launching", "running")
    if running:
        from ugro import launch as launcher

        cluster = state.resolved()
        launcher.collect(cluster, record.job_id, nodes)
    view = LogView(jobs.experiment_dir(record.job_id) / "logs", rank=rank)
    if not view.files() and not running and not follow_:
        raise UsageError(
            f"no logs{f' for rank {rank}' if rank is not None else ''} in "
            f"{jobs.experiment_dir(record.job_id) / 'logs'}"
        )
    for line in view.new_lines():
        click.echo(line)
    while follow_ and running:
        time.sleep(3)
        record = launcher.refresh(cluster, jobs.resolve(record.job_id))
        running = record.state in ("launching", "running")
        if running:
            launcher.collect(cluster, record.job_id, nodes)
        for line in view.new_lines():
            click.echo(line)
    if follow_:
        click.echo(f"[{record.job_id} {record.state}]", err=True)


@cli.command()
@click.argument("job")
@click.option("--json", "as_json", is_flag=True)
@pass_state
def results(state: _State, job: str, as_json: bool) -> None:
    """A job's status, duration, losses, throughput, checkpoints and artifacts."""
    from ugro.jobs import Jobs, summarize

    jobs = Jobs(state.resolved())
    record = jobs.resolve(job)
    if record.state in ("launching", "running"):
        from ugro import launch as launcher

        record = launcher.refresh(state.resolved(), record)
    summary = summarize(jobs, record)
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))
        return
    from ugro.display import console, results_table

    console.print(results_table(summary))


@cli.command(name="stop")
@click.argument("job")
@pass_state
def stop_command(state: _State, job: str) -> None:
    """Stop every rank of a job on every node, and verify nothing of it is left."""
    from ugro import launch as launcher
    from ugro.jobs import Jobs

    cluster = state.resolved()
    jobs = Jobs(cluster)
    record = jobs.resolve(job)
    nodes = jobs.nodes(record)
    states = launcher.stop(cluster, record.job_id, nodes)
    stopped = sum(s.get("signalled", 0) for s in states.values())
    try:
        launcher.collect(cluster, record.job_id, nodes)
    except UgroError as exc:
        click.echo(f"warning: collecting logs failed: {exc.message}", err=True)
    if record.state in ("launching", "running"):
        jobs.record(record.job_id, "stopped")
    click.echo(
        f"Stopped {record.job_id}: {stopped} processes on {len(nodes)} nodes; "
        "none of the job's processes is left."
    )


@cli.command(name="collect")
@click.argument("job")
@pass_state
def collect_command(state: _State, job: str) -> None:
    """Bring a job's logs, metrics, checkpoints and artifacts to the master now."""
    from ugro import launch as launcher
    from ugro.jobs import Jobs

    cluster = state.resolved()
    jobs = Jobs(cluster)
    record = jobs.resolve(job)
    result = launcher.collect(cluster, record.job_id, jobs.nodes(record))
    changed = sum(h.changed for h in result.hosts.values())
    click.echo(
        f"Collected {record.job_id} into {jobs.experiment_dir(record.job_id)} "
        f"({changed} transfers)."
    )


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
