"""mnt-bench: the paper's per-component latency table (Tables 6 and 7) for each installed
backend, side by side with PyTorch eager FP32, and the physical limit of the machine; with
--streams, end-to-end rows for N concurrent streams on one loaded model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mnt.export.errors import ExportError
from mnt.runtime import options
from mnt.runtime.backends import registry
from mnt.runtime.console import EXIT_CODES_EPILOG, GuardedCommand

BACKENDS = tuple(k.name for k in registry.BUILT_IN)  # the baseline, torch, runs beside each
MAX_STREAMS = 16


def _ints(text: str, what: str = "K", most: int = 8) -> tuple[int, ...]:
    try:
        values = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1 or max(values) > most:
        raise click.BadParameter(f"{what} must be in 1..{most}")
    return values


def _streams(text: str | None) -> tuple[int, ...]:
    return () if text is None else _ints(text, "stream counts", MAX_STREAMS)


def backend_names(folder: Path, manifest) -> list[str]:
    """The backends this machine can run for this artefact folder (the baseline aside)."""
    return [n for n in registry.available(folder, manifest) if n in BACKENDS]


def _options(name: str, threads: int) -> dict:
    return {"threads": threads} if name.startswith("onnxruntime-") else {}


def make_backends_for(name: str, folder: Path, manifest, threads: int):
    return registry.make_backends(folder, manifest, name, **_options(name, threads))


def tracker_for(name: str, folder: Path, threads: int):
    """A factory of video landmark trackers as `mnt-run` makes them for backend `name`
    (the folder's face components where it has them, else mediapipe)."""
    from mnt.runtime.landmarkers import landmark_backend

    return lambda: landmark_backend(False, artifacts=folder, backend=name, **_options(name, threads))


def face_engines(names: list[str], folder: Path, manifest, threads: int) -> dict:
    """name -> (precision, tracker factory) for the backends that run the folder's face
    components themselves (a TensorRT folder built before them would run them elsewhere)."""
    from mnt.runtime.landmarkers.onnx_mesh import OnnxMeshLandmarks, has_face_components

    if not has_face_components(manifest):
        return {}
    runs = [n for n in names if n.startswith("onnxruntime-")
            or all(n in c.engines for c in manifest.faces.values())]
    return {n: (manifest.precision, lambda n=n: OnnxMeshLandmarks(folder, n, static_image_mode=False,
                                                                  **_options(n, threads)))
            for n in runs}


def _photos(folder: Path):
    from mnt.runtime.images import IMAGE_SUFFIXES, read_image

    images = [read_image(p) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    images = [x for x in images if x is not None]
    if not images:
        raise ExportError(f"no readable photos in {folder}")
    return images


@click.command(name="mnt-bench", cls=GuardedCommand, context_settings={"help_option_names": ["-h", "--help"]},
               epilog=EXIT_CODES_EPILOG)
@options.artifacts()
@options.checkpoint("the one the artefacts were built from; the PyTorch baseline and the FLOP counts "
                    "come from it (default: the built-in model's, when --artifacts is not given)")
@click.option("--backends", default=None,
              help="Comma-separated backends to measure, from onnxruntime-cpu, onnxruntime-cuda, "
                   "tensorrt (the PyTorch baseline 'torch' always runs beside them); default: "
                   "every backend that runs here.")
@click.option("--targets", "ks", default="1,8", show_default=True, callback=lambda c, p, v: _ints(v),
              help="Numbers of target photos K to measure.")
@click.option("--frames", type=click.IntRange(min=1), default=20, show_default=True,
              help="Timed iterations of each row (for the end-to-end row: driver frames).")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True,
              help="Untimed iterations before each row.")
@click.option("--streams", "stream_counts", default=None, callback=lambda c, p, v: _streams(v),
              help="Comma-separated numbers of concurrent streams, e.g. 1,2,4: per K and backend, "
                   "end-to-end rows for that many streams on one loaded model, pipelined and "
                   "sequential (--frames frames each after --warmup); default: none (they "
                   "multiply the run time).")
@click.option("--video", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Driver video; default: the built-in demo driver.")
@click.option("--photos", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of target photos (reused to make K of them); default: the demo target.")
@click.option("--server", metavar="URL",
              help="Load-test the server at URL (mnt-serve's grpc://HOST:PORT or http://HOST:PORT) "
                   "instead: --streams concurrent streams (default 1,2,4,8), --frames frames each "
                   "from --clips, beside the same streams on --artifacts in this process (the "
                   "folder the server serves; no checkpoint needed).")
@click.option("--clips", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="--server: folder of driver videos, one per stream in turn; default: --video.")
@click.option("--limit", "limit_s", type=click.FloatRange(min=1), default=120, show_default=True,
              help="--server: seconds per row at most; frames not sent by then are counted.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for every backend and "
              "PyTorch alike; default: the cores this process may use.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report as JSON here.")
@click.option("--markdown", "markdown_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report as a markdown table here.")
@options.verbose()
@options.version("mnt-bench")
def main(artifacts: Path | None, checkpoint: Path | None, backends: str | None, ks: tuple[int, ...],
         frames: int, warmup: int, stream_counts: tuple[int, ...], video: Path | None,
         photos: Path | None, server: str | None, clips: Path | None, limit_s: float, threads: int | None,
         json_out: Path | None, markdown_out: Path | None) -> None:
    """Time each component and the end-to-end frame on every backend, interleaved with
    PyTorch eager FP32 from the same checkpoint; print the table (and write JSON/markdown).

    Example: mnt-bench --artifacts build/ --checkpoint model.safetensors --json bench.json
    """
    from mnt.runtime.files import atomic_path

    data: dict | list
    if server is not None:
        from mnt.export.bench.serve import markdown as serve_markdown

        data = load(server, artifacts, stream_counts or (1, 2, 4, 8), frames, video, clips, photos, limit_s)
        table = serve_markdown(data)
    else:
        from mnt.export.bench.report import markdown

        data = run(artifacts, checkpoint, backends, ks, frames, warmup, video, photos, threads, stream_counts)
        table = markdown(data)
    click.echo(table)
    for path, text in ((json_out, json.dumps(data, indent=2) + "\n"), (markdown_out, table)):
        if path is not None:
            with atomic_path(path) as temporary:
                temporary.write_text(text)
            click.echo(f"wrote {path}", err=True)


def load(server: str, artifacts: Path | None, counts: tuple[int, ...], frames: int, video: Path | None,
         clips: Path | None, photos: Path | None, limit_s: float) -> list[dict]:
    from mnt.export.bench.serve import clip_frames, load_test
    from mnt.runtime.defaults import cache_dir, default_artifacts
    from mnt.runtime.demo import demo_inputs
    from mnt.runtime.serve.client import encoded

    def say(line: str) -> None:
        click.echo(line, err=True)

    demo_video, demo_photos = demo_inputs(cache_dir() / "demo")
    drivers = sorted(p for p in clips.iterdir() if p.is_file()) if clips else [video or demo_video]
    photo_bytes = [encoded(image) for image in _photos(photos or demo_photos)][:1]
    return load_test(server, artifacts or default_artifacts(say), clip_frames(drivers, frames), photo_bytes,
                     counts, limit_s, say)


def run(artifacts: Path | None, checkpoint: Path | None, backends: str | None, ks: tuple[int, ...],
        frames: int, warmup: int, video: Path | None, photos: Path | None,
        threads: int | None, stream_counts: tuple[int, ...] = ()) -> dict:
    from mnt.export.bench import machine
    from mnt.export.bench.report import report
    from mnt.export.bench.runner import (
        BASELINE,
        Bench,
        encoded_targets,
        landmark_detector,
        open_contender,
        prepare_inputs,
    )
    from mnt.export.bench.streams import stream_rows
    from mnt.export.model.backend import torch_backends
    from mnt.export.model.checkpoint import load_checkpoint
    from mnt.export.model.flops import component_costs
    from mnt.runtime.defaults import cache_dir, default_artifacts, default_checkpoint
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
    names = backend_names(artifacts, manifest) if backends is None else [
        b.strip() for b in backends.split(",") if b.strip() and b.strip() != BASELINE]
    unknown = [b for b in names if b not in BACKENDS]
    if unknown:
        raise ExportError(f"unknown backend {unknown[0]!r}; choose from {', '.join(BACKENDS)} "
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
    baseline = open_contender(BASELINE, "fp32", artifacts,
                           torch_backends(artifacts, manifest, checkpoint, threads))
    contenders = [open_contender(n, manifest.precision, artifacts,
                           make_backends_for(n, artifacts, manifest, threads)) for n in names]
    try:
        inputs = prepare_inputs(video, _photos(photos), baseline.model.size, baseline.model,
                                frames + warmup)
        rows = landmark_detector(inputs, warmup, frames, face_engines(names, artifacts, manifest, threads))
        for i, contender in enumerate(contenders or [baseline]):
            say(f"{contender.name} against {BASELINE} ({frames} iterations after {warmup} warm-up):")
            bench = Bench(contender, None if contender is baseline else baseline, inputs, flops, warmup,
                          frames, frames, say, report_baseline=i == 0)
            for k in ks:
                rows += [*bench.components(k, driver_lt=k == ks[0]), *bench.target_encoding(k),
                         *bench.driver_generation(k)]
                if stream_counts:  # the contender alone: PyTorch's rows pair with it above
                    rows += stream_rows(contender.model, contender.name, contender.precision,
                                        encoded_targets(contender.model, inputs, k), inputs.video,
                                        stream_counts, warmup, frames,
                                        tracker_for(contender.name, artifacts, threads), say)
    finally:
        for contender in [baseline, *contenders]:
            contender.model.close()
    facts = {"cpu": cpu, "gpu": machine.gpu_facts(), "versions": machine.versions(),
             "threads": threads, "peak_rss_mb": round(machine.rss_mb()[1], 1)}
    settings = {"artifacts": str(artifacts), "preset_image_size": manifest.model.get("image_size"),
                "precision": manifest.precision, "targets": list(ks), "streams": list(stream_counts),
                "frames": frames, "warmup": warmup, "video": video.name,
                "command": " ".join(["mnt-bench", *sys.argv[1:]])}
    return report(facts, settings, rows, matmul)


if __name__ == "__main__":
    main()
