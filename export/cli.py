"""mnt-export: make, inspect, export and verify MarioNETte checkpoints and artefacts; say
what this machine offers (`doctor`). `--help`, `build --from`, `verify`, `inspect` and
`doctor` import no torch: the commands import what they need when they run."""

from __future__ import annotations

import time
from pathlib import Path

import click

from mnt.export.errors import AccuracyError, ExportError
from mnt.export.model.config import PRESETS
from mnt.export.train.cli import evaluate, train
from mnt.runtime import options
from mnt.runtime.console import EXIT_CODES_EPILOG, GuardedGroup, json_text


@click.group(name="mnt-export", cls=GuardedGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=EXIT_CODES_EPILOG)
@options.verbose()
@options.version("mnt-export")
def main() -> None:
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
@options.force("OUTPUT")
def init(preset: str, seed: int, output: Path, force: bool) -> None:
    """Write a seeded, random-initialised checkpoint with plausible landmark statistics."""
    from mnt.export.model.checkpoint import init_reference, save_checkpoint

    if output.exists() and not force:
        raise ExportError(f"{output} already exists", hint="pass --force to overwrite it")
    reference = init_reference(PRESETS[preset], seed)
    save_checkpoint(reference, output, note=f"mnt-export init --preset {preset} --seed {seed}", replace=force)
    size_mb = output.stat().st_size / 1e6
    click.echo(f"wrote {output} ({preset} preset, seed {seed}, {size_mb:.1f} MB)")


@main.command()
@options.checkpoint("the one to describe")
@click.option("--preset", type=click.Choice(sorted(PRESETS)),
              help="Describe a preset's architecture instead of a checkpoint.")
def describe(checkpoint: Path | None, preset: str | None) -> None:
    """Print parameters and FLOPs of each deployment component (per frame at the model's size)."""
    from mnt.export.model.checkpoint import init_reference, load_checkpoint
    from mnt.export.model.flops import component_costs

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
@options.checkpoint("the one to export")
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
@click.option("--engines", "engines", type=click.Choice(["tensorrt", "tensorrt-rtx", "none"]),
              default="tensorrt", show_default=True,
              help="Engines to build after the ONNX (or into the --from folder). tensorrt: for this "
                   "device's GPU, where TensorRT and a GPU are present (else skipped, with the line "
                   "saying how to build them on the device); tensorrt-rtx: portable engines for RTX "
                   "PCs, built here with or without a GPU (pip install 'mnt[rtx]'); none.")
@click.option("--no-engines", "no_engines", is_flag=True, hidden=True, help="The same as --engines none.")
@click.option("--compute-capabilities", default="80,86,89,120", show_default=True,
              help="tensorrt-rtx: the GPUs its engines are for (75 Turing, 80/86 Ampere, 89 Ada, "
                   "120/121 Blackwell); each is compiled just-in-time on first run there.")
@options.force("OUT")
@options.faces()
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
                  kernels: Path | None, engines: str, no_engines: bool, compute_capabilities: str,
                  force: bool, faces: tuple[Path, ...],
                  plugins: bool, calibration_data: Path | None, calibration_frames: int,
                  held_back_frames: int, calibration_seed: int, search_frames: int,
                  from_fp32: Path | None) -> None:
    """Export each component to ONNX, check it against the PyTorch reference in float64 on
    real faces, and write OUT with its manifest (last, so a failed build leaves nothing);
    then TensorRT engines where TensorRT and a GPU are present (or, with --engines
    tensorrt-rtx, TensorRT-RTX engines for RTX PCs, on any machine).

    On the device: `mnt-export build --from OUT` builds the engines of a folder made elsewhere."""
    from mnt.export.tensorrt.builder import EngineSettings, engines_or_skip, rtx_capabilities, verify_goldens

    engines = "none" if no_engines else engines
    settings = None
    if engines == "tensorrt-rtx":  # refuse now what would fail after a minute of export
        from mnt.export.tensorrt.builder import engines_unavailable

        settings = EngineSettings(runtime="tensorrt-rtx",
                                  compute_capabilities=rtx_capabilities(compute_capabilities))
        if plugins:
            raise ExportError("--plugins cannot be built with --engines tensorrt-rtx",
                              hint="TensorRT-RTX's Python package has no plugin API (tensorrt_rtx.plugin "
                                   "does not import); leave out --plugins for TensorRT-RTX")
        reason = engines_unavailable("tensorrt-rtx")
        if reason:
            raise ExportError(f"cannot build TensorRT-RTX engines: {reason}")
    elif engines == "tensorrt":
        settings = EngineSettings()

    if from_dir is not None:
        if checkpoint or out:
            raise ExportError("--from takes an existing artefact folder; leave out --checkpoint and --out")
        verify_goldens(from_dir, log=click.echo)
        if settings is not None:
            click.echo(engines_or_skip(from_dir, kernels, log=click.echo, settings=settings))
        return
    if checkpoint is None or out is None:
        raise ExportError("build needs --checkpoint and --out (or --from DIR to add engines to a folder)")
    int8 = precision == "int8"
    if int8 != (calibration_data is not None):
        raise ExportError("int8 builds, and only they, need calibration media",
                          hint="pass --precision int8 with --calibration-data DIR (driver videos, "
                               "target photos)")
    if int8 and plugins:
        raise ExportError("--plugins is not available for int8 builds yet")
    if from_fp32 is not None and not int8:
        raise ExportError("--from-fp32 is for int8 builds only (an FP32 build to calibrate from)")
    from mnt.runtime.files import refuse_if_locked, refuse_if_short

    # Now, not after torch's import, the checkpoint's load and a minute of export: another
    # build of OUT, and a disk too small for half the weights (FP16 halves them, INT8 quarters;
    # half: folding batch norms drops some), which the build writes at least once.
    refuse_if_locked(out, ExportError)
    if checkpoint.is_file():
        share = {"fp16": 4, "int8": 8}.get(precision, 2)
        refuse_if_short(out, checkpoint.stat().st_size // share, ExportError)
    started = time.perf_counter()
    if int8:
        from mnt.calibration.build import build_int8
        from mnt.calibration.data import Options

        build_int8(checkpoint, out, calibration_data,
                   Options(calibration_frames, held_back_frames, calibration_seed, search_frames),
                   force=force, face_paths=faces, log=click.echo, from_fp32=from_fp32)
    else:
        from mnt.export.onnx.build import build

        build(checkpoint, precision, out, force=force, face_paths=faces, log=click.echo, plugins=plugins)
    click.echo(f"wrote {out} in {time.perf_counter() - started:.0f} s; check it on another machine "
               f"with `mnt-export verify {out}`")
    if settings is not None:
        click.echo(engines_or_skip(out, kernels, log=click.echo, settings=settings))


@main.command("verify")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="ONNX Runtime execution provider to verify on.")
@click.option("--allow-cpu-fallback", is_flag=True,
              help="With --device cuda, accept ONNX Runtime falling back to the CPU.")
@options.json_flag()
def verify_command(folder: Path, device: str, allow_cpu_fallback: bool, as_json: bool) -> None:
    """Re-run FOLDER's components on their stored golden inputs and compare with the
    float64 reference outputs under the build's thresholds; exit 3 on any drift (1 when
    files changed since the build or goldens are missing)."""
    from mnt.export.onnx.verify import format_rows, report, verify

    _, rows = verify(folder, device, allow_cpu_fallback)
    data = report(folder, device, rows)
    verdict = data["verdict"]
    click.echo(json_text(data) if as_json else format_rows(rows), nl=not as_json)
    if not verdict["passed"]:
        raise (AccuracyError if verdict["drifted"] else ExportError)(verdict["line"])
    if not as_json:
        click.echo(verdict["line"])


@main.command("inspect")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@options.json_flag()
def inspect_command(folder: Path, as_json: bool) -> None:
    """Summarise an artefact folder: components, precision, shapes, accuracy, sizes."""
    from mnt.export.onnx.verify import format_summary, summarise

    summary = summarise(folder)
    click.echo(json_text(summary) if as_json else format_summary(summary), nl=not as_json)


@main.command("doctor")
@options.artifacts("say what `--backend auto` picks for it (default: the pick without a folder)")
@click.option("--target", type=click.Choice(["rtx", "jetson", "triton"]),
              help="Instead: every reason this machine would not run mnt on that target (an RTX PC, a "
                   "Jetson Orin on JetPack 6, Triton's image), each with its fix; exits 1 if any.")
@options.json_flag()
@click.pass_context
def doctor_command(ctx: click.Context, artifacts: Path | None, target: str | None, as_json: bool) -> None:
    """Say what this machine offers mnt: Python, packages, ONNX Runtime providers, TensorRT,
    the GPU, its driver and cuda-python, nvcc, which backends can run and what `--backend
    auto` picks. Imports no torch; exits 0 whatever it finds (with --target, 1 when anything
    is missing)."""
    if target is not None:
        from mnt.export.targets import format_report, problems, report

        missing = problems(target)
        click.echo(json_text(report(target, missing)) if as_json else format_report(target, missing),
                   nl=not as_json)
        ctx.exit(1 if missing else 0)
    from mnt.export.doctor import facts, format_facts

    found = facts(artifacts)
    click.echo(json_text(found) if as_json else format_facts(found), nl=not as_json)


@main.command("islands")
@options.checkpoint("the one to measure", required=True)
@options.faces()
def islands_command(checkpoint: Path, faces: tuple[Path, ...]) -> None:
    """Measure what each FP32 island buys: the float16 frame (PyTorch, end to end, K=1)
    against float64, with all islands, each left out, and none."""
    from mnt.export.model.checkpoint import load_checkpoint
    from mnt.export.onnx.islands import ablate
    from mnt.export.onnx.samples import default_faces, faces_from

    reference = load_checkpoint(checkpoint)
    size = reference.config.image_size
    ablate(reference, faces_from(list(faces), size) if faces else default_faces(size), log=click.echo)


@main.command("kernels")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write libmnt_kernels.so, one PTX file per op and kernels.json to.")
@options.force("OUT")
@click.option("--capability", help="Build for this GPU's compute capability only (e.g. 8.7 on a Jetson "
              "Orin; 7.5 at the least): a faster build; default: every GPU below.")
def kernels_command(out: Path, force: bool, capability: str | None) -> None:
    """Compile the CUDA kernels (warp, cross-attention) with nvcc: SASS for sm_75, sm_80,
    sm_86, sm_87 (Jetson Orin), sm_89 and sm_90 plus PTX for newer GPUs, and the per-op PTX
    (compute_75) that TensorRT plugins embed."""
    from mnt.kernels.build import build_kernels

    started = time.perf_counter()
    manifest = build_kernels(out, force=force, log=click.echo, capability=capability)
    size_mb = manifest["files"]["libmnt_kernels.so"]["bytes"] / 1e6
    click.echo(f"wrote {out}: libmnt_kernels.so ({size_mb:.1f} MB, {', '.join(manifest['fatbin_targets'])}), "
               f"{', '.join(f'{op}.ptx' for op in manifest['ops'])} ({manifest['archs']['op_ptx']}) "
               f"in {time.perf_counter() - started:.0f} s")


@main.command("triton")
@click.option("--artifacts", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Artefact folder from `mnt-export build` (with its face components).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The model repository to write (tritonserver --model-repository OUT).")
@click.option("--format", "fmt", type=click.Choice(["onnx", "plan"]), default="onnx", show_default=True,
              help="onnx: Triton's ONNX Runtime backend, any GPU; plan: the folder's TensorRT engines "
                   "(valid only on their GPU and with their TensorRT version: the NGC image's).")
@click.option("--kind", type=click.Choice(["gpu", "cpu"]), default="gpu", show_default=True,
              help="Where the component models' instances run.")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True,
              help="Instances of each model (requests they run at once).")
@click.option("--image", default="25.01", show_default=True,
              help="The tritonserver image tag (YY.MM) that serves it: --format plan checks every plan "
                   "loads in its TensorRT.")
@click.option("--serving-tensorrt", metavar="VERSION",
              help="That image's TensorRT version, where mnt does not know the tag.")
@options.force("OUT")
def triton_command(artifacts: Path, out: Path, fmt: str, kind: str, instances: int, image: str,
                   serving_tensorrt: str | None, force: bool) -> None:
    """Write a Triton model repository: one model per component and the stateful
    `mnt_reenact` model (Python backend, sequence batching: each stream's target state,
    keyed by its correlation ID). Its README.md says how to serve it.

    Example: mnt-export triton --artifacts build/ --out repo/
    """
    from mnt.export.triton.repository import write_repository

    models = write_repository(artifacts, out, fmt, f"KIND_{kind.upper()}", instances, force=force,
                              say=click.echo, image=image, tensorrt=serving_tensorrt)
    click.echo(f"wrote {out}: {len(models)} models ({', '.join(models)}); see {out / 'README.md'}")


main.add_command(train)
main.add_command(evaluate)

if __name__ == "__main__":
    main()
