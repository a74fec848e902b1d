"""The `ugro` command line: click definitions by area (cluster, jobs, queue, sandbox), put
together in ugro.cli.root; each verb's work is in ugro/commands/<verb>.py."""

from ugro.cli.root import cli, main

__all__ = ["cli", "main"]
