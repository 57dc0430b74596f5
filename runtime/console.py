"""What every mnt command line shares: one place that turns an MntError (or Ctrl-C)
into one clear line and a non-zero exit; tracebacks only with --verbose."""

from __future__ import annotations

import traceback
from typing import Any

import click

from mnt.runtime.errors import MntError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


class GuardedGroup(click.Group):
    """A click group whose subcommands' MntErrors are caught once, here."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MntError as err:
            if ctx.find_root().params.get("verbose"):
                traceback.print_exc()
            click.echo(f"{ctx.find_root().info_name}: error: {err.one_line()}", err=True)
            ctx.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            click.echo(f"{ctx.find_root().info_name}: interrupted; nothing half-written was kept",
                       err=True)
            ctx.exit(EXIT_INTERRUPTED)
