"""mnt-bench: the paper's per-component latency table (Tables 6 and 7) for each installed
engine, side by side with PyTorch eager FP32, and the physical limit of the machine."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mnt.export.errors import ExportError
from mnt.runtime.console import guard

ENGINES = ("onnxruntime-cpu", "onnxruntime-cuda", "tensorrt")


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1 or max(values) > 8:
        raise click.BadParameter("K must be in 1..8")
    return values


def installed_engines(manifest) -> list[str]:
    """The engines this machine can run for this artefact folder (the baseline aside)."""
    from mnt.export.machine import gpu_facts

    found = []
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    if ort is not None:
        found.append("onnxruntime-cpu")
        if gpu_facts() and "CUDAExecutionProvider" in ort.get_available_providers():
            found.append("onnxruntime-cuda")
    if gpu_facts() and any(c.engine for c in manifest.components.values()):
        found.append("tensorrt")
    return found


def make_engine_backends(name: str, folder: Path, manifest, threads: int):
    from mnt.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from mnt.runtime.reenactor import make_backends

    if name.startswith("onnxruntime-"):
        device = name.removeprefix("onnxruntime-")
        return {n: OnnxRuntimeBackend(info, folder, device, threads=threads)
                for n, info in manifest.components.items()}
    return make_backends(folder, manifest, name)


def _photos(folder: Path):
    from mnt.runtime.pipeline import IMAGE_SUFFIXES, read_image

    images = [read_image(p) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    images = [x for x in images if x is not None]
    if not images:
        raise ExportError(f"no readable photos in {folder}")
    return images


@click.command(name="mnt-bench", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--artifacts", type=click.Path(file_okay=False, path_type=Path),
              help="Artefact folder from `mnt-export build`; default: the built-in tiny model "
                   "that mnt-run uses (built into the cache folder on first use).")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              help="The checkpoint the artefacts were built from: the PyTorch baseline and the "
                   "FLOP counts come from it (default: the built-in model's).")
@click.option("--backends", default=None,
              help="Comma-separated engines to measure, from onnxruntime-cpu, onnxruntime-cuda, "
                   "tensorrt (the PyTorch baseline 'torch' always runs beside them); default: "
                   "every engine installed here.")
@click.option("--targets", "ks", default="1,8", show_default=True, callback=lambda c, p, v: _ints(v),
              help="Numbers of target photos K to measure.")
@click.option("--frames", type=click.IntRange(min=1), default=20, show_default=True,
              help="Timed iterations of each row (for the end-to-end row: driver frames).")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True,
              help="Untimed iterations before each row.")
@click.option("--video", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Driver video; default: the built-in demo driver.")
@click.option("--photos", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of target photos (reused to make K of them); default: the demo target.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for every engine and "
              "PyTorch alike; default: the cores this process may use.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report as JSON here.")
@click.option("--markdown", "markdown_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report as a markdown table here.")
@click.option("--verbose", "-v", is_flag=True, help="Show tracebacks of errors.")
def main(artifacts: Path | None, checkpoint: Path | None, backends: str | None, ks: tuple[int, ...],
         frames: int, warmup: int, video: Path | None, photos: Path | None, threads: int | None,
         json_out: Path | None, markdown_out: Path | None, verbose: bool) -> None:
    """Time each component and the end-to-end frame on every engine, interleaved with
    PyTorch eager FP32 from the same checkpoint; print the table (and write JSON/markdown).

    Example: mnt-bench --artifacts build/ --checkpoint model.safetensors --json bench.json
    """
    with guard("mnt-bench", verbose):
        data = run(artifacts, checkpoint, backends, ks, frames, warmup, video, photos, threads)
        from mnt.export.bench_report import markdown
        from mnt.runtime.files import atomic_path

        table = markdown(data)
        click.echo(table)
        for path, text in ((json_out, json.dumps(data, indent=2) + "\n"), (markdown_out, table)):
            if path is not None:
                with atomic_path(path) as temporary:
                    temporary.write_text(text)
                click.echo(f"wrote {path}", err=True)


def run(artifacts: Path | None, checkpoint: Path | None, backends: str | None, ks: tuple[int, ...],
        frames: int, warmup: int, video: Path | None, photos: Path | None,
        threads: int | None) -> dict:
    from mnt.export import machine
    from mnt.export.bench import BASELINE, Bench, landmark_detector, open_engine, prepare_inputs
    from mnt.export.bench_report import report
    from mnt.export.checkpoint import load_checkpoint
    from mnt.export.profile import component_costs
    from mnt.export.torch_backend import torch_backends
    from mnt.runtime.cli import cache_dir, default_artifacts, default_checkpoint
    from mnt.runtime.demo import demo_inputs
    from mnt.runtime.manifest import load_manifest

    def say(line: str) -> None:
        click.echo(line, err=True)

    if artifacts is None:
        artifacts = default_artifacts(say)
        checkpoint = checkpoint or default_checkpoint()
    if checkpoint is None:
        raise ExportError("mnt-bench needs the checkpoint the artefacts were built from",
                          hint="pass --checkpoint CKPT (the PyTorch baseline runs from it)")
    manifest = load_manifest(artifacts)
    names = installed_engines(manifest) if backends is None else [
        b.strip() for b in backends.split(",") if b.strip() and b.strip() != BASELINE]
    unknown = [b for b in names if b not in ENGINES]
    if unknown:
        raise ExportError(f"unknown backend {unknown[0]!r}; choose from {', '.join(ENGINES)} "
                          f"(and {BASELINE}, which always runs)")
    cpu = machine.cpu_facts()
    threads = threads or cpu["cores"]
    say(f"counting FLOPs and measuring the matrix-multiply rate ({threads} threads) ...")
    costs = component_costs(load_checkpoint(checkpoint), ks)
    flops = {(c.component, c.k): c.gflops for c in costs}
    matmul = {(BASELINE, "fp32"): machine.torch_matmul_gflops(threads)}
    for name in names:
        if name.startswith("onnxruntime-"):
            dtype = {"fp16": "float16"}.get(manifest.precision, "float32")
            matmul[(name, manifest.precision)] = machine.onnxruntime_matmul_gflops(
                name.removeprefix("onnxruntime-"), dtype, threads)
    if video is None or photos is None:
        demo_video, demo_photos = demo_inputs(cache_dir() / "demo")
        video, photos = video or demo_video, photos or demo_photos
    baseline = open_engine(BASELINE, "fp32", artifacts,
                           torch_backends(artifacts, manifest, checkpoint, threads))
    engines = [open_engine(n, manifest.precision, artifacts,
                           make_engine_backends(n, artifacts, manifest, threads)) for n in names]
    try:
        inputs = prepare_inputs(video, _photos(photos), baseline.model.size, baseline.model,
                                frames + warmup)
        rows = [landmark_detector(inputs, warmup, frames)]
        for i, engine in enumerate(engines or [baseline]):
            say(f"{engine.name} against {BASELINE} ({frames} iterations after {warmup} warm-up):")
            bench = Bench(engine, None if engine is baseline else baseline, inputs, flops, warmup,
                          frames, frames, say, report_baseline=i == 0)
            for k in ks:
                rows += [*bench.components(k, driver_lt=k == ks[0]), *bench.target_encoding(k),
                         *bench.driver_generation(k)]
    finally:
        for engine in [baseline, *engines]:
            engine.model.close()
    facts = {"cpu": cpu, "gpu": machine.gpu_facts(), "versions": machine.versions(),
             "threads": threads, "peak_rss_mb": round(machine.rss_mb()[1], 1)}
    settings = {"artifacts": str(artifacts), "preset_image_size": manifest.model.get("image_size"),
                "precision": manifest.precision, "targets": list(ks), "frames": frames,
                "warmup": warmup, "video": video.name, "command": " ".join(["mnt-bench", *sys.argv[1:]])}
    return report(facts, settings, rows, matmul)


if __name__ == "__main__":
    main()
