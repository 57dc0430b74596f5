"""The options the mnt commands share, each declared once with one help text (a command
adds the sentence that is really its own). Torch-free: mnt-run and mnt-export import it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[F], F]

VERBOSE_KEY = "mnt.verbose"  # in ctx.meta, which every context of one command line shares
BUILT_IN_MODEL = ("default: the built-in demo model (the small preset, trained on the clips of 37 "
                  "people), built into the cache folder on first use")
VERSION_MESSAGE = "%(prog)s, version %(version)s"


def _remember_verbose(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    # Given before or after a subcommand: either sets the one flag the guard reads.
    if value:
        ctx.meta[VERBOSE_KEY] = True
    return value


def verbose_requested(ctx: click.Context | None) -> bool:
    return bool(ctx is not None and ctx.meta.get(VERBOSE_KEY))


VERBOSE = {"is_flag": True, "expose_value": False, "callback": _remember_verbose,
           "help": "Show the traceback of an error."}


def verbose_option() -> click.Option:
    """-v/--verbose as a parameter object, for a group to add to each of its subcommands."""
    return click.Option(["--verbose", "-v"], **VERBOSE)


def verbose() -> Decorator:
    return click.option("--verbose", "-v", **VERBOSE)


def version(prog: str) -> Decorator:
    return click.version_option(package_name="mnt", prog_name=prog, message=VERSION_MESSAGE)


def artifacts(default: str = BUILT_IN_MODEL) -> Decorator:
    """`default`: what the command does without the option (one phrase)."""
    return click.option("--artifacts", type=click.Path(file_okay=False, path_type=Path),
                        help=f"Artefact folder from `mnt-export build`; {default}.")


def checkpoint(purpose: str, required: bool = False) -> Decorator:
    """`purpose`: which checkpoint, for this command (one phrase)."""
    return click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), required=required,
                        help=f"Checkpoint file (safetensors, from `mnt-export init` or `train`): {purpose}.")


def faces() -> Decorator:
    return click.option("--faces", type=click.Path(exists=True, path_type=Path), multiple=True,
                        help="Photos or videos of real faces (files or folders; repeat for more) for "
                             "the model's inputs; default: the astronaut photo shipped with scikit-image.")


def force(what: str) -> Decorator:
    """`what`: the thing replaced, as the help names it (OUT, the output video)."""
    return click.option("--force", is_flag=True,
                        help=f"Replace {what} if it exists (the old one stays until the new one is "
                             "complete).")


def json_flag() -> Decorator:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON (the same data as the text) instead of text.")
