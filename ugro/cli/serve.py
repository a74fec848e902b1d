"""`ugro serve up|status|logs|down`: what jobs trained, behind an OpenAI-compatible endpoint.

Each command imports its verb's module when it runs (ugro.commands.serve): `ugro --help` loads
click and nothing else.
"""

from __future__ import annotations

import click

from ugro.cli.options import json_option, pass_context
from ugro.commands.context import Context


@click.group()
def serve() -> None:
    """Serve jobs' adapters on a node (OpenAI-compatible API), watched like a job.

    \b
      ugro serve up chat                 the job chat's adapter on the best idle node
      ugro serve status                  each deployment: URL, models, state, latency
      ugro serve logs chat -f            the server's log, as it grows
      ugro serve down chat               stop it; nothing is left on the node
    """


@serve.command(name="up")
@click.argument("jobs", nargs=-1, required=True)
@click.option("--name", help="The deployment's name (default: the first job's name).")
@click.option("--node", help="Serve on this node (default: the healthiest idle one that fits).")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Its port."
)
@click.option(
    "--engine",
    type=click.Choice(["auto", "vllm", "transformers"]),
    default="auto",
    show_default=True,
    help="vLLM (a CUDA node with vllm), UGRO's own server (transformers + peft), or auto.",
)
@click.option(
    "--api-key-file",
    metavar="FILE",
    help="The bearer key clients send (default: one made now, shown once, kept 0600).",
)
@click.option(
    "--host",
    metavar="ADDRESS",
    help="The address to listen on (default: the node's address in cluster.yaml; a loopback "
    "address needs no key).",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(1, 1_000_000),
    default=512,
    show_default=True,
    help="The most tokens one answer may ask for.",
)
@click.option("--force", is_flag=True, help="Serve on a node that runs a job or serves already.")
@click.option("--detach", is_flag=True, help="Return once started, before the models load.")
@pass_context
def up_command(
    ctx: Context,
    jobs: tuple[str, ...],
    name: str | None,
    node: str | None,
    port: int,
    engine: str,
    api_key_file: str | None,
    host: str | None,
    max_tokens: int,
    force: bool,
    detach: bool,
) -> int:
    """Serve one base model with JOBS' adapters (each answers as its job's name)."""
    from ugro.commands.serve import serve_up
    from ugro.serve.deploy import UpRequest

    request = UpRequest(
        jobs=jobs,
        name=name,
        node=node,
        port=port,
        engine=engine,
        api_key_file=api_key_file,
        force=force,
        host=host,
        max_tokens=max_tokens,
    )
    return serve_up(ctx, request, detach=detach)


@serve.command(name="status")
@click.argument("name", required=False)
@json_option
@pass_context
def status_command(ctx: Context, name: str | None, as_json: bool) -> int:
    """Each deployment: node, URL, engine, models, state, uptime, requests, latency, tokens/s."""
    from ugro.commands.serve import serve_status

    return serve_status(ctx, name=name, as_json=as_json)


@serve.command(name="logs")
@click.argument("name")
@click.option("--lines", "-n", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing as the log grows.")
@pass_context
def logs_command(ctx: Context, name: str, lines: int, follow: bool) -> int:
    """The server's log, read on its node."""
    from ugro.commands.serve import serve_logs

    return serve_logs(ctx, name=name, lines=lines, follow=follow)


@serve.command(name="down")
@click.argument("name")
@pass_context
def down_command(ctx: Context, name: str) -> int:
    """Stop a deployment and check that nothing is left on its node."""
    from ugro.commands.serve import serve_down

    return serve_down(ctx, name=name)
