"""mnt-export: make, inspect and (later) export MarioNETte checkpoints."""

from __future__ import annotations

import time
from pathlib import Path

import click

from mnt.export.errors import ExportError
from mnt.export.model import PRESETS
from mnt.export.train.cli import evaluate, train
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
                   "at a quarter of the widths for fast CPU work, 'small' tiny at 128x128 "
                   "(the built-in demo model's).")
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
    """Print parameters and FLOPs of each deployment component (per frame at the model's size)."""
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


@main.command("build")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint to export (see `mnt-export init`).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp16", show_default=True,
              help="fp16: a typed FP16 graph with FP32 islands (flows and sampling, softmax, "
                   "normalisation); fp32: the reference precision; int8: Q/DQ calibrated on "
                   "--calibration-data, the most sensitive blocks left in FP32.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Artefact folder to create.")
@click.option("--from", "from_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Instead of exporting: take this artefact folder's ONNX, check them against its "
                   "goldens, and build its TensorRT engines into it (on the target device).")
@click.option("--kernels", type=click.Path(file_okay=False, path_type=Path),
              help="Kernel library folder from `mnt-export kernels` for plugin-variant engines "
                   "(default: $MNT_KERNELS_DIR).")
@click.option("--engines/--no-engines", default=True, show_default=True,
              help="Build TensorRT engines after the ONNX where TensorRT and a GPU are present.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists (only once the new build passed).")
@click.option("--faces", type=click.Path(exists=True, path_type=Path), multiple=True,
              help="Photos or videos (files or folders) for the parity inputs; default: the "
                   "astronaut photo shipped with scikit-image.")
@click.option("--plugins", is_flag=True,
              help="Plugin variant: warp and attention in the target encoder and generator as "
                   "custom nodes mnt::Warp / mnt::CrossAttention (our kernels in TensorRT; "
                   "ONNX Runtime runs reference implementations).")
@click.option("--calibration-data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="int8: a folder (searched recursively) of driver videos and target photos.")
@click.option("--calibration-frames", type=click.IntRange(min=1), default=32, show_default=True,
              help="int8: driver frames in the calibration sample.")
@click.option("--held-back-frames", type=click.IntRange(min=1), default=8, show_default=True,
              help="int8: frames kept out of the sample for the accuracy report and gate.")
@click.option("--calibration-seed", type=int, default=0, show_default=True,
              help="int8: seed of the frame sample (the same media and seed: the same sample).")
@click.option("--search-frames", type=click.IntRange(min=1), default=6, show_default=True,
              help="int8: calibration frames each trial of the per-layer sensitivity search is judged on.")
@click.option("--from-fp32", "from_fp32", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="int8: calibrate from this FP32 build of the same checkpoint (checked, left "
                   "unchanged) instead of building one first.")
def build_command(checkpoint: Path | None, precision: str, out: Path | None, from_dir: Path | None,
                  kernels: Path | None, engines: bool, force: bool, faces: tuple[Path, ...],
                  plugins: bool, calibration_data: Path | None, calibration_frames: int,
                  held_back_frames: int, calibration_seed: int, search_frames: int,
                  from_fp32: Path | None) -> None:
    """Export each component to ONNX, check it against the PyTorch reference in float64 on
    real faces, and write OUT with its manifest (last, so a failed build leaves nothing);
    then TensorRT engines where TensorRT and a GPU are present.

    On the device: `mnt-export build --from OUT` builds the engines of a folder made elsewhere."""
    from mnt.export.engine import engines_or_skip, verify_goldens

    if from_dir is not None:
        if checkpoint or out:
            raise ExportError("--from takes an existing artefact folder; leave out --checkpoint and --out")
        verify_goldens(from_dir, log=click.echo)
        click.echo(engines_or_skip(from_dir, kernels, log=click.echo))
        return
    if checkpoint is None or out is None:
        raise ExportError("build needs --checkpoint and --out (or --from DIR to add engines to a folder)")
    from mnt.export.build import build

    started = time.perf_counter()
    calibration = None
    if precision == "int8":
        from mnt.calibration.data import Options

        calibration = Options(calibration_frames, held_back_frames, calibration_seed, search_frames)
    build(checkpoint, precision, out, force=force, face_paths=faces, log=click.echo, plugins=plugins,
          calibration_data=calibration_data, calibration=calibration, from_fp32=from_fp32)
    click.echo(f"wrote {out} in {time.perf_counter() - started:.0f} s; check it on another machine "
               f"with `mnt-export verify {out}`")
    if engines:
        click.echo(engines_or_skip(out, kernels, log=click.echo))


@main.command("verify")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="ONNX Runtime execution provider to verify on.")
@click.option("--allow-cpu-fallback", is_flag=True,
              help="With --device cuda, accept ONNX Runtime falling back to the CPU.")
def verify_command(folder: Path, device: str, allow_cpu_fallback: bool) -> None:
    """Re-run FOLDER's components on their stored golden inputs and compare with the
    float64 reference outputs under the build's thresholds; exit 1 on any drift."""
    from mnt.export.verify import format_rows, verify

    _, rows = verify(folder, device, allow_cpu_fallback)
    click.echo(format_rows(rows))
    bad = [r for r in rows if r.status != "ok"]
    if bad:
        raise ExportError(f"{folder}: {len(bad)} of {len(rows)} checks failed")
    click.echo(f"{folder}: all {len(rows)} outputs within their thresholds")


@main.command("inspect")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
def inspect_command(folder: Path) -> None:
    """Summarise an artefact folder: components, precision, shapes, accuracy, sizes."""
    from mnt.export.verify import describe_folder

    click.echo(describe_folder(folder))


@main.command("islands")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--faces", type=click.Path(exists=True, path_type=Path), multiple=True,
              help="Photos or videos for the inputs; default: the scikit-image astronaut.")
def islands_command(checkpoint: Path, faces: tuple[Path, ...]) -> None:
    """Measure what each FP32 island buys: the float16 frame (PyTorch, end to end, K=1)
    against float64, with all islands, each left out, and none."""
    from mnt.export.checkpoint import load_checkpoint
    from mnt.export.islands import ablate
    from mnt.export.samples import default_faces, faces_from

    reference = load_checkpoint(checkpoint)
    size = reference.config.image_size
    ablate(reference, faces_from(list(faces), size) if faces else default_faces(size), log=click.echo)


@main.command("kernels")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write libmnt_kernels.so, one PTX file per op and kernels.json to.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists (only once the new build succeeded).")
def kernels_command(out: Path, force: bool) -> None:
    """Compile the CUDA kernels (warp, cross-attention) with nvcc: SASS for sm_87 (Jetson
    Orin), sm_89 and sm_90 plus PTX for newer GPUs, and the per-op PTX TensorRT plugins embed."""
    from mnt.kernels.build import build_kernels

    started = time.perf_counter()
    manifest = build_kernels(out, force=force, log=click.echo)
    size_mb = manifest["files"]["libmnt_kernels.so"]["bytes"] / 1e6
    click.echo(f"wrote {out}: libmnt_kernels.so ({size_mb:.1f} MB, {', '.join(manifest['fatbin_targets'])}), "
               f"{', '.join(f'{op}.ptx' for op in manifest['ops'])} ({manifest['archs']['op_ptx']}) "
               f"in {time.perf_counter() - started:.0f} s")


main.add_command(train)
main.add_command(evaluate)

if __name__ == "__main__":
    main()
