"""What every mnt command line shares: one place that turns an MntError (or Ctrl-C)
into one clear line and a non-zero exit; tracebacks only with --verbose."""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Iterator
from typing import Any

import click

from mnt.runtime.errors import MntError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


@contextlib.contextmanager
def guard(prog: str, verbose: bool) -> Iterator[None]:
    try:
        yield
    except MntError as err:
        if verbose:
            traceback.print_exc()
        click.echo(f"{prog}: error: {err.one_line()}", err=True)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        click.echo(f"{prog}: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)


class GuardedGroup(click.Group):
    """A click group whose subcommands' MntErrors are caught once, here."""

    def invoke(self, ctx: click.Context) -> Any:
        root = ctx.find_root()
        with guard(root.info_name or "mnt", bool(root.params.get("verbose"))):
            return super().invoke(ctx)
