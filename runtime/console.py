"""What every mnt command line shares: one place that turns an error (or Ctrl-C) into one
clear line and a documented exit code; tracebacks only with -v/--verbose.

Exit codes (the same for mnt-export, mnt-run and mnt-bench; see EXIT_CODES):
0 success, 1 an error you can fix (an MntError), 2 a usage error (click's own), 3 an
accuracy gate failed, 4 an internal error (a bug), 130 interrupted, 143 terminated.

SIGTERM (what `timeout`, `docker stop` and service managers send) is handled like Ctrl-C:
it raises `Terminated`, a KeyboardInterrupt, so that every cleanup written for Ctrl-C (a
shorter video closed, a staged build removed, the trainer's state saved) runs for it too.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import click

from mnt.runtime.errors import MntError
from mnt.runtime.options import verbose_option, verbose_requested

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2  # what click exits with on a bad command line
EXIT_ACCURACY = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
EXIT_TERMINATED = 143  # 128 + SIGTERM

EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "success"),
    (EXIT_ERROR, "error you can fix: bad input, a missing file or package"),
    (EXIT_USAGE, "usage error: an unknown option, a missing or bad argument"),
    (EXIT_ACCURACY, "accuracy gate failed: drift found by verify, build or build --from"),
    (EXIT_INTERNAL, "internal error: a bug (rerun with -v; please report it)"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
    (EXIT_TERMINATED, "terminated (SIGTERM), cleaned up as for Ctrl-C"),
)
# "\b": click prints the table as it is instead of rewrapping it into one paragraph.
EXIT_CODES_EPILOG = "\b\nExit codes:\n" + "\n".join(f"  {code:<4} {text}" for code, text in EXIT_CODES)


def exit_code(err: MntError) -> int:
    """An MntError's exit code: 1, unless its class names another (AccuracyError: 3)."""
    return int(getattr(err, "exit_code", EXIT_ERROR))


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwinds like Ctrl-C."""


def _terminate(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends at once
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises Terminated (main thread only: signals go there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _one_line(text: str) -> str:
    return " ".join(text.split())


@contextlib.contextmanager
def guard(prog: str, verbose: bool | Callable[[], bool]) -> Iterator[None]:
    """`verbose`: a flag, or a function asked once an error happened (the flag may be parsed
    after the guard was entered, as a subcommand's -v is)."""

    def wants_traceback() -> bool:
        return bool(verbose() if callable(verbose) else verbose)

    try:
        with sigterm_as_interrupt():
            yield
    except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
        raise  # click's own: usage errors (2), --help/--version, and a closed stdout
    except MntError as err:
        if wants_traceback():
            traceback.print_exc()
        click.echo(f"{prog}: error: {err.one_line()}", err=True)
        sys.exit(exit_code(err))
    except Terminated:
        click.echo(f"{prog}: terminated", err=True)
        sys.exit(EXIT_TERMINATED)
    except KeyboardInterrupt:
        click.echo(f"{prog}: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as err:
        what = _one_line(f"{type(err).__name__}: {err}")
        if wants_traceback():
            traceback.print_exc()
            click.echo(f"{prog}: internal error: {what} (please report it)", err=True)
        else:
            click.echo(f"{prog}: internal error: {what} (run with -v for the traceback; "
                       "please report it)", err=True)
        sys.exit(EXIT_INTERNAL)


def _guarded_invoke(ctx: click.Context, invoke: Callable[[], Any]) -> Any:
    root = ctx.find_root()
    prog = root.command.name or root.info_name or "mnt"
    with guard(prog, lambda: verbose_requested(ctx)):  # (ctx.meta: shared with the subcommand's)
        return invoke()


class GuardedCommand(click.Command):
    """A click command whose errors are caught once, here (exit codes above)."""

    def invoke(self, ctx: click.Context) -> Any:
        return _guarded_invoke(ctx, lambda: super(GuardedCommand, self).invoke(ctx))


class GuardedGroup(click.Group):
    """A click group whose subcommands' errors are caught once, here; each subcommand also
    takes -v/--verbose, so that it works before and after the subcommand's name."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not any(p.name == "verbose" for p in cmd.params):
            cmd.params.append(verbose_option())
        if cmd.epilog is None:
            cmd.epilog = EXIT_CODES_EPILOG
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context) -> Any:
        return _guarded_invoke(ctx, lambda: super(GuardedGroup, self).invoke(ctx))


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf", "-inf", "nan": JSON has no such numbers
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def json_text(data: Any) -> str:
    """Strict JSON for --json output (non-finite floats as strings), newline-terminated."""
    return json.dumps(_jsonable(data), indent=2, allow_nan=False, default=str) + "\n"
