"""`ugro sandbox up|down|status|fault`: a real multi-host cluster on this machine."""

from __future__ import annotations

import click

from ugro.cli.options import json_option

sandbox_name_option = click.option(
    "--name", default="ugro", show_default=True, help="Sandbox name."
)


@click.group()
def sandbox() -> None:
    """A real multi-host cluster on this machine (network namespaces + sshd). Needs root."""


@sandbox.command(name="up")
@sandbox_name_option
@click.option(
    "--count", type=click.IntRange(min=1), help="How many nodes, the master included (default 3)."
)
# The old spelling of --count: `--nodes` names nodes everywhere else (this release only).
@click.option("--nodes", "legacy_count", type=click.IntRange(min=1), hidden=True)
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
@click.option(
    "--bare",
    is_flag=True,
    help="Nodes as machines are before enrolment: a password login only, no key of the "
    "master's, no known host key (try `ugro init` and `ugro node add` on them).",
)
@click.option(
    "--slurm",
    is_flag=True,
    help="Deploy Slurm on it with `ugro slurm up` (needs sudo, munge, slurmctld and slurmd "
    "installed here); every node logs in as your user, with a home of its own.",
)
def sandbox_up(
    name: str,
    count: int | None,
    legacy_count: int | None,
    subnet: str,
    wheelhouse: str | None,
    packages: tuple[str, ...],
    bare: bool,
    slurm: bool,
) -> int:
    """Bring a sandbox up and write its cluster.yaml."""
    from ugro.commands import sandbox as run

    if legacy_count is not None:
        if count is not None:
            raise click.UsageError("--count N gives the number of nodes; drop --nodes")
        click.echo(
            "ugro: note: `sandbox up --nodes N` is now `--count N` (--nodes names nodes in "
            "every other command); the old spelling goes in the next release",
            err=True,
        )
        count = legacy_count
    return run.up(
        name=name,
        nodes=count or 3,
        subnet=subnet,
        wheelhouse=wheelhouse,
        packages=packages,
        bare=bare,
        slurm=slurm,
    )


@sandbox.command(name="down")
@sandbox_name_option
@click.option("--purge-env", is_flag=True, help="Also delete the nodes' shared Python environment.")
def sandbox_down(name: str, purge_env: bool) -> int:
    """Remove everything the sandbox made (safe to repeat)."""
    from ugro.commands import sandbox as run

    return run.down(name=name, purge_env=purge_env)


@sandbox.command(name="status")
@sandbox_name_option
@json_option
def sandbox_status(name: str, as_json: bool) -> int:
    """Nodes, addresses, users, and whether each sshd answers. Exit 1 if one does not."""
    from ugro.commands import sandbox as run

    return run.status(name=name, as_json=as_json)


@sandbox.command(name="fault")
@click.argument("node")
@click.argument(
    "action",
    type=click.Choice(
        ["down", "up", "partition", "heal", "slow", "cpu", "mtu", "block", "hide", "reinstall"]
    ),
)
@sandbox_name_option
@click.option("--delay-ms", type=click.IntRange(min=0), help="slow: added delay each way (netem).")
@click.option("--rate-kbit", type=click.IntRange(min=0), help="slow: bandwidth cap (tbf).")
@click.option(
    "--percent", type=click.IntRange(1, 100), help="cpu: the node's share of a CPU (100: no limit)."
)
@click.option("--mtu", type=click.IntRange(576, 9000), help="mtu: the node's link MTU.")
@click.option("--peer", metavar="NODE", help="block: the worker whose packets this one drops.")
@click.option(
    "--tool", type=click.Choice(["python3", "rsync"]), help="hide: the program the node lacks."
)
def sandbox_fault(
    name: str,
    node: str,
    action: str,
    delay_ms: int | None,
    rate_kbit: int | None,
    percent: int | None,
    mtu: int | None,
    peer: str | None,
    tool: str | None,
) -> int:
    """Inject a fault: NODE down|up, partition|heal, slow --delay-ms N / --rate-kbit N,
    cpu --percent N (a slower node), mtu --mtu N, block --peer NODE (the pair cannot connect),
    hide --tool T (a program it lacks), reinstall (a new host key). heal undoes every one but
    down and reinstall."""
    from ugro.commands import sandbox as run

    return run.fault(
        name=name,
        node=node,
        action=action,
        delay_ms=delay_ms,
        rate_kbit=rate_kbit,
        percent=percent,
        mtu=mtu,
        peer=peer,
        tool=tool,
    )
