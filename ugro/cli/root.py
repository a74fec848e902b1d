"""The `ugro` command: parsing and dispatch. Each verb's work is in ugro/commands/<verb>.py;
its click definition in ugro/cli/<area>.py.

Imports are deferred into the commands so that `ugro --help` starts in a fraction of a second
(neither Ansible, rich, pydantic nor torch is loaded to print help). Every UgroError is caught
once in `main`, printed as one line, and turned into its exit code; a traceback only ever goes
to the log file.
"""

from __future__ import annotations

import logging
import sys

import click

from ugro.cli import cluster, jobs, node, queue, sandbox, serve, slurm
from ugro.commands.context import Context
from ugro.core.errors import ExitCode, UgroError
from ugro.core.logs import setup_terminal

log = logging.getLogger("ugro.cli")


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
      ugro init                a cluster.yaml for this machine, UGRO's own SSH key
      ugro node add gpu1 --ip ADDRESS --user USER   enrol a machine (its host key checked)
      ugro health              check every node (GPU, torch, disk, SSH)
      ugro launch --name exp1  train on every node, follow it, bring the results home
      ugro results exp1        how it went
      ugro daemon start        run the queue and watch the nodes' health
      ugro submit --name exp2  queue a job for when its nodes are free
      ugro serve up exp1       talk to what exp1 trained (OpenAI-compatible API)
      ugro slurm up            deploy Slurm on the cluster (munge, slurmctld, slurmd)
      ugro sandbox up          a 3-node cluster on this machine, to try things on
    """
    setup_terminal(verbose)
    ctx.obj = Context(config, verbose)


for _command in (
    node.init_command,
    node.node,
    cluster.health,
    cluster.netcheck,
    cluster.status,
    cluster.inventory,
    cluster.sync,
    cluster.run_command,
    jobs.launch_command,
    jobs.logs,
    jobs.results,
    jobs.plot,
    jobs.compare,
    jobs.dashboard,
    jobs.stop_command,
    jobs.reset_command,
    jobs.collect_command,
    queue.submit_command,
    queue.queue_command,
    queue.cancel_command,
    queue.daemon,
    serve.serve,
    slurm.slurm,
    sandbox.sandbox,
):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    try:
        code = cli.main(args=argv, prog_name="ugro", standalone_mode=False)
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
    sys.exit(code if isinstance(code, int) else ExitCode.OK)
