"""mnt-export: make, inspect and (later) export MarioNETte checkpoints."""

from __future__ import annotations

from pathlib import Path

import click

from mnt.export.errors import ExportError
from mnt.export.model import PRESETS
from mnt.runtime.console import GuardedGroup


@click.group(name="mnt-export", cls=GuardedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", "-v", is_flag=True, help="Show tracebacks of errors.")
@click.version_option(package_name="mnt")
def main(verbose: bool) -> None:
    """Turn a MarioNETte checkpoint into deployable artefacts.

    Start without a trained model: `mnt-export init --preset tiny -o tiny.safetensors`
    writes a seeded random checkpoint that every later step accepts.
    """


@main.command()
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="tiny", show_default=True,
              help="Model size: 'paper' is the published model, 'tiny' the same structure "
                   "at a quarter of the widths for fast CPU work.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed; the same seed gives a byte-identical file.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Checkpoint file to write (safetensors).")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
def init(preset: str, seed: int, output: Path, force: bool) -> None:
    """Write a seeded, random-initialised checkpoint with plausible landmark statistics."""
    from mnt.export.checkpoint import init_reference, save_checkpoint

    if output.exists() and not force:
        raise ExportError(f"{output} already exists", hint="pass --force to overwrite it")
    reference = init_reference(PRESETS[preset], seed)
    save_checkpoint(reference, output, note=f"mnt-export init --preset {preset} --seed {seed}")
    size_mb = output.stat().st_size / 1e6
    click.echo(f"wrote {output} ({preset} preset, seed {seed}, {size_mb:.1f} MB)")


@main.command()
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint to describe.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)),
              help="Describe a preset's architecture instead of a checkpoint.")
def describe(checkpoint: Path | None, preset: str | None) -> None:
    """Print parameters and FLOPs of each deployment component (per 256x256 frame)."""
    from mnt.export.checkpoint import init_reference, load_checkpoint
    from mnt.export.profile import component_costs

    if (checkpoint is None) == (preset is None):
        raise ExportError("describe needs exactly one of --checkpoint or --preset")
    reference = load_checkpoint(checkpoint) if checkpoint else init_reference(PRESETS[preset], 0)
    config = reference.config
    click.echo(f"image {config.image_size}x{config.image_size}, channels "
               f"{config.base_channels}->{config.max_channels}, backbone "
               f"{config.backbone.block} {list(config.backbone.layers)}")
    click.echo(f"{'component':<24}{'phase':<14}{'K':>3}{'params (M)':>12}{'GFLOP':>10}")
    for row in component_costs(reference):
        click.echo(f"{row.component:<24}{row.phase:<14}{row.k:>3}{row.params / 1e6:>12.2f}"
                   f"{row.gflops:>10.1f}")
if __name__ == "__main__":
    main()
