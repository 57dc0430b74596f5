"""mnt-run: reenact a driver video (or a webcam) with a folder of target photos."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import click
import numpy as np

from mnt.runtime import options
from mnt.runtime.backends import registry
from mnt.runtime.compose import OUTPUTS
from mnt.runtime.console import EXIT_CODES_EPILOG, GuardedCommand, json_text
from mnt.runtime.defaults import cache_folder, default_artifacts, default_checkpoint
from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.landmarkers import CHOICES as LANDMARKS

# Containers that take VideoWriter's libx264 stream (.webm and .gif refuse it; without a
# suffix FFmpeg cannot pick a format).
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv")


@click.command(name="mnt-run", cls=GuardedCommand, context_settings={"help_option_names": ["-h", "--help"]},
               epilog=EXIT_CODES_EPILOG)
@click.argument("source", required=False)
@click.option("--targets", "targets_dir", type=click.Path(path_type=Path),
              help="Folder with 1 to 8 photos of the target person.")
@click.option("--demo", is_flag=True,
              help="Use built-in inputs: the astronaut photo (scikit-image) as the target, and a "
                   "video made from matplotlib's Grace Hopper photo with a synthetic head sway "
                   "and mouth movement as the driver (unless SOURCE or --targets are given).")
@options.artifacts()
@click.option("--backend", type=click.Choice(registry.names()), default="auto", show_default=True,
              help="Inference engine; auto takes TensorRT where the artefacts hold engines built "
                   "for this GPU, else ONNX Runtime CUDA where a GPU and onnxruntime-gpu exist, "
                   "else the CPU; torch runs the PyTorch reference (needs the export side and "
                   "--checkpoint).")
@options.checkpoint("with --backend torch, the one the artefacts were built from (default: the "
                    "built-in model's, when --artifacts is not given)")
@click.option("-o", "--output", type=click.Path(path_type=Path),  # a folder: refused by run()
              help="Output video (H.264, the driver's audio copied); default: SOURCE's name "
                   "with .reenacted.mp4 in the current folder (for a camera: only a preview).")
@click.option("--max-frames", type=click.IntRange(min=1), help="Stop after this many frames.")
@click.option("--output-mode", "mode", type=click.Choice(OUTPUTS), default="face",
              show_default=True, help="face: the reenacted face (the model's size); side-by-side: "
              "driver crop | result; paste-back: the face blended into the first target photo.")
@click.option("--no-landmark-transformer", is_flag=True,
              help="Drive with the driver's own landmarks (MarioNETte without LT).")
@click.option("--landmarks", type=click.Choice(LANDMARKS), default="auto", show_default=True,
              help="Face detection and landmarks: engines: the artefacts' face_detector and "
                   "face_landmarks components on --backend (no mediapipe needed); mediapipe: "
                   "mediapipe's own face mesh; auto: the engines where the artefacts hold them.")
@click.option("--fan-weights", type=click.Path(path_type=Path),
              help="Folder with the 3D-FAN weight files (the paper's landmark detector, via the "
                   "face-alignment package; also $MNT_FAN_WEIGHTS); default: mediapipe's face mesh.")
@click.option("--live", is_flag=True,
              help="Replay SOURCE in real time, as a camera would deliver it: frames the pipeline "
                   "has no time for are dropped (and counted), so latency stays bounded; the "
                   "recording keeps the frames' real times. A camera is always live.")
@click.option("--no-pipeline", "sequential", is_flag=True,
              help="Run decoding, landmarks and the generator one after another on one thread "
                   "instead of as overlapping stages: no frames wait between stages, so latency "
                   "is one frame's time (on a 2-core CPU at some cost in frames per second).")
@click.option("--max-size", type=click.IntRange(min=64), default=1920, show_default=True,
              help="paste-back: scale the target photo down to fit this many pixels on its "
                   "longer side (the output video's size).")
@click.option("--server", metavar="URL",
              help="Reenact on a server (mnt-serve, or NVIDIA's Triton with the repository of "
                   "`mnt-export triton`): grpc://HOST:PORT or http://HOST:PORT. The server's "
                   "model, backend and landmarks are used; only video in and out stay here.")
@options.force("the output video")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="Also write the closing summary (frames, per-frame times, backends) as JSON to "
                   "this file, or to stdout for '-'.")
@options.verbose()
@options.version("mnt-run")
def main(source: str | None, targets_dir: Path | None, demo: bool, artifacts: Path | None,
         backend: str, checkpoint: Path | None, output: Path | None, max_frames: int | None, mode: str,
         no_landmark_transformer: bool, landmarks: str, fan_weights: Path | None, live: bool,
         sequential: bool, max_size: int, server: str | None, force: bool, json_out: Path | None) -> None:
    """Reenact SOURCE (a video file, or a camera index such as 0) with the face in TARGETS.

    Example: mnt-run driver.mp4 --targets photos/ -o out.mp4. Try it with no files at
    all: mnt-run --demo -o demo.mp4.
    """
    if demo and (source is None or targets_dir is None):
        from mnt.runtime.demo import demo_inputs

        video, photos = demo_inputs(cache_folder("demo"))
        source, targets_dir = source or str(video), targets_dir or photos
    if source is None or targets_dir is None:
        raise RuntimeStageError("give a driver video (or camera index) and --targets DIR",
                                hint="or try `mnt-run --demo -o demo.mp4`")
    if server is not None:
        _check_remote(artifacts, backend, checkpoint, no_landmark_transformer, landmarks, fan_weights)
    if json_out is not None and str(json_out) != "-" and not json_out.parent.is_dir():
        raise RuntimeStageError(f"cannot write {json_out}: folder {json_out.parent} does not exist")
    summary = run(source, targets_dir, artifacts, backend, output, max_frames, mode,
                  not no_landmark_transformer, force, fan_weights, checkpoint, max_size, live, landmarks,
                  not sequential, server)
    if json_out is not None:
        _write_json(json_out, summary)


def _check_remote(artifacts: Path | None, backend: str, checkpoint: Path | None, no_transformer: bool,
                  landmarks: str, fan_weights: Path | None) -> None:
    """Options that choose the model or how it runs belong to the server."""
    given = [name for name, value in (("--artifacts", artifacts), ("--backend", backend != "auto"),
                                      ("--checkpoint", checkpoint),
                                      ("--no-landmark-transformer", no_transformer),
                                      ("--landmarks", landmarks != "auto"), ("--fan-weights", fan_weights))
             if value]
    if given:
        raise RuntimeStageError(f"{', '.join(given)} cannot be used with --server: the server's "
                                "model runs the frames", hint="give them to mnt-serve instead")


def _write_json(path: Path, summary: dict) -> None:
    if str(path) == "-":
        click.echo(json_text(summary), nl=False)
        return
    from mnt.runtime.files import atomic_path

    with atomic_path(path) as temporary:
        temporary.write_text(json_text(summary))
    click.echo(f"wrote {path}", err=True)


def run(source: str, targets_dir: Path, artifacts: Path | None, backend: str, output: Path | None,
        max_frames: int | None, mode: str, transform: bool, force: bool,
        fan_weights: Path | None = None, checkpoint: Path | None = None, max_size: int = 1920,
        live: bool = False, landmarks: str = "auto", pipelined: bool = True,
        server: str | None = None) -> dict:
    """Reenact, write the video, print the closing summary; -> that summary's data."""
    from mnt.runtime.compose import backdrop as canvas_of
    from mnt.runtime.compose import compose
    from mnt.runtime.files import exclusive
    from mnt.runtime.landmarkers import landmark_backend
    from mnt.runtime.landmarkers.fan import check_weights, weights_folder
    from mnt.runtime.pipeline import DriverStream, load_targets
    from mnt.runtime.sources import CameraSource, PacedSource, VideoSource
    from mnt.runtime.stages import Counters, reenact
    from mnt.runtime.video import VideoWriter

    def say(line: str) -> None:
        click.echo(line, err=True)

    # Everything that can be checked is checked here, before the model loads.
    camera = source.isdigit()
    if not camera:
        _check_driver(source)
    _check_targets(targets_dir)
    if output is None and not camera:
        output = Path(f"{Path(source).stem}.reenacted.mp4")
    if output is not None:
        _check_output(output, force)
    if camera:
        _check_camera(int(source))
    frames = (CameraSource(int(source)) if camera else PacedSource(source) if live
              else VideoSource(source))  # (a file is opened here: an unreadable one stops now)
    fan = weights_folder(fan_weights)
    if fan is not None:  # before any slow step
        check_weights(fan)
    # Held until the video is written: a second run to the same -o stops here, at once.
    lock = exclusive(output, RuntimeStageError) if output is not None else contextlib.nullcontext()
    with lock, contextlib.ExitStack() as resources:
        started = time.perf_counter()
        if server is not None:
            from mnt.runtime.serve.client import remote_driver

            stream, targets = remote_driver(server, targets_dir, say)
            resources.callback(stream.close)
            used = {"all": f"server {server}"}
            say(f"targets: {len(targets.files)} photo(s), encoded by the server in "
                f"{time.perf_counter() - started:.1f} s")
        else:
            folder = artifacts or default_artifacts(say)
            if artifacts is None and checkpoint is None:
                checkpoint = default_checkpoint()
            from mnt.runtime.reenactor import Reenactor

            extra = {"checkpoint": checkpoint} if backend == "torch" else {}
            model = resources.enter_context(Reenactor(folder, backend=backend, **extra))
            used = _backends_used(model)
            faces = {"artifacts": folder, "backend": backend, "landmarks": landmarks}
            with landmark_backend(True, fan_weights, **faces) as photos:
                targets = load_targets(targets_dir, model, photos, _target_cache(say), say)
            encoding = ("taken from the cache" if targets.cache_hit
                        else f"computed in {time.perf_counter() - started:.1f} s")
            say(f"targets: {len(targets.files)} photo(s), encoding {encoding}")
            tracker = resources.enter_context(landmark_backend(False, fan_weights, **faces))
            # (closed before the tracker and the model: its stages stop before its states go)
            stream = DriverStream(model, targets, tracker, float(frames.rate), transform)
            resources.callback(stream.close)
        backdrop = canvas_of(targets.photo, targets.crops[0], max_size) if mode == "paste-back" else None
        count = frames.count
        total = min(count, max_frames) if count and max_frames else (count or max_frames or 0)
        # A live recording keeps its frames' real times to the millisecond (frames are
        # dropped when behind); a file's keep their slots at its rate.
        slots = Fraction(1000) if frames.live else frames.rate
        counters = Counters()
        playing = time.perf_counter()

        def open_writer(shape: tuple[int, ...]) -> VideoWriter:
            # a file's frames keep their times in its own unit: exact at any frame rate
            return VideoWriter(output, slots, shape[1], shape[0], audio_from=frames.audio_from,
                               replace=force, time_base=None if frames.live else frames.time_base)

        # (closed before the stream: its stages stop before the stream's states go)
        with contextlib.closing(reenact(frames, stream, pipelined, counters=counters)) as items:
            writer = _play(items, stream, counters, total, max_frames,
                           lambda picture: compose(mode, *picture, backdrop),
                           None if output is None else open_writer, camera, say)
        if writer is None and output is not None:
            raise RuntimeStageError(f"no human face found in any frame of {source}; "
                                    f"{output} was not written")
    summary = _summary(stream, targets, output, used, counters, time.perf_counter() - playing, pipelined)
    for line in _summary_lines(summary):
        say(line)
    return summary


def _target_cache(say: Callable[[str], None]) -> Path | None:
    try:
        return cache_folder("targets")
    except RuntimeStageError as err:
        say(f"warning: {err.one_line()}; the targets are encoded on every run until then")
        return None


def _play(items, stream, shown, total: int, max_frames: int | None, compose, open_writer, camera: bool,
          say: Callable[[str], None]):
    """Reenacted frames (mnt.runtime.stages) into the writer that `open_writer(shape)` makes
    at the first face (or only previewed), counted in `shown.frames` (the pipeline may have
    made more when it stops); -> the closed writer, or None when no face came."""
    from mnt.runtime.video import DecodeError

    writer, began = None, time.perf_counter()
    try:
        # (a camera has no length: the bar then only shows the frames per second)
        with click.progressbar(length=max(total, 1), label="reenacting", file=sys.stderr,
                               show_pos=True, item_show_func=lambda _: _fps(stream, began)) as bar:
            for item in items:
                bar.update(1)
                if item.produced is None:  # no face yet: nothing to reenact
                    continue
                started = time.perf_counter()
                picture = compose(item.produced)
                if open_writer is not None:
                    writer = writer or open_writer(picture.shape)
                    writer.write(picture, item.at)
                stream.timings.io += time.perf_counter() - started
                shown.frames += 1
                if camera and _preview(picture):
                    break
                if max_frames and shown.frames >= max_frames:
                    break
    except (KeyboardInterrupt, DecodeError) as stop:
        # what was written is kept: a valid shorter video, with its audio
        if writer is not None and writer.frames:
            writer.close()
            say(f"{'interrupted' if isinstance(stop, KeyboardInterrupt) else 'stopped'}: "
                f"wrote the first {writer.frames} frames to {writer.path}")
        raise
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close()
    return writer


def _check_driver(source: str) -> None:
    if "://" in source:
        raise RuntimeStageError(f"driver {source}: streams are not supported yet",
                                hint="give a video file or a camera index")
    device = re.fullmatch(r"/dev/video(\d+)", source)
    if device:
        raise RuntimeStageError(f"driver {source} is a camera device",
                                hint=f"give its camera index instead: mnt-run {device[1]} ...")
    path = Path(source)
    if path.is_dir():
        raise RuntimeStageError(f"driver {source} is a folder; give a video file")
    if not path.is_file():
        raise RuntimeStageError(f"driver video {source} does not exist")


def _check_targets(folder: Path) -> None:
    if folder.is_file():
        raise RuntimeStageError(f"--targets {folder} is a file; --targets takes a folder of 1 to 8 photos",
                                hint=f"put it in a folder and pass that, e.g. --targets {folder.parent}")
    if not folder.is_dir():
        raise RuntimeStageError(f"targets folder {folder} does not exist",
                                hint="--targets takes a folder of 1 to 8 photos")


def _check_output(output: Path, force: bool) -> None:
    """The output can be written: a file name with a suffix the H.264 writer takes, in a
    folder that exists and accepts new files (VideoWriter writes a hidden file beside it)."""
    if output.is_dir():
        raise RuntimeStageError(f"output {output} is a folder",
                                hint=f"give a video file name, e.g. -o {output / 'out.mp4'}")
    suffix = output.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        what = f"a {output.suffix} file" if suffix else "a file without a suffix"
        raise RuntimeStageError(f"output {output}: cannot write H.264 video to {what}",
                                hint=f"name it {output.stem or output.name}.mp4; .mov and .mkv work too")
    if output.exists() and not force:
        raise RuntimeStageError(f"{output} already exists", hint="pass --force to overwrite it")
    folder = output.parent
    if not folder.is_dir():
        raise RuntimeStageError(f"cannot write {output}: folder {folder} does not exist",
                                hint="create it first, or give another -o")
    if not (os.access(folder, os.W_OK | os.X_OK) and _can_create_in(folder)):
        raise RuntimeStageError(f"cannot write {output}: folder {folder} is not writable",
                                hint="give -o in a folder you can write to")


def _can_create_in(folder: Path) -> bool:
    # os.access says yes to root, and on some read-only or network mounts: really try.
    try:
        handle, name = tempfile.mkstemp(prefix=".mnt-run-probe-", dir=folder)
    except OSError:
        return False
    os.close(handle)
    os.unlink(name)
    return True


def _check_camera(index: int) -> None:
    import cv2

    previous = cv2.getLogLevel() if hasattr(cv2, "getLogLevel") else None
    if previous is not None:
        cv2.setLogLevel(0)  # OpenCV's own warnings about the missing device would bury the error
    try:
        capture = cv2.VideoCapture(index)
        opened = capture.isOpened()
        capture.release()
    finally:
        if previous is not None:
            cv2.setLogLevel(previous)
    if not opened:
        raise RuntimeStageError(f"cannot open camera {index}",
                                hint="check that it is connected and not in use; the first camera is 0")


def _fps(stream, began: float) -> str:
    frames, seconds = stream.timings.frames, time.perf_counter() - began
    return f"{frames / seconds:.1f} fps" if frames and seconds > 0 else ""


def _preview(picture: np.ndarray) -> bool:
    """Show a frame; True when the user pressed q or Esc."""
    import cv2

    cv2.imshow("mnt-run (q to quit)", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    return (cv2.waitKey(1) & 0xFF) in (ord("q"), 27)


def _backends_used(model) -> dict[str, str]:
    """Component -> the backend that really runs it (ONNX Runtime: by the provider it got,
    which may be the CPU fallback of `auto`)."""
    used = {}
    for name, backend in model.backends.items():
        kind = type(backend).__name__.removesuffix("Backend").lower()
        providers = list(getattr(backend, "providers", None) or [])  # (a property of ONNX Runtime's)
        if kind == "onnxruntime" and providers:
            kind += "-cuda" if providers[0] == "CUDAExecutionProvider" else "-cpu"
        used[name] = kind
    return used


def _summary(stream, targets, output: Path | None, backends: dict[str, str], counters,
             seconds: float, pipelined: bool) -> dict:
    t = stream.timings
    return {"frames": counters.frames, "per_frame_ms": {k: round(v, 3) for k, v in t.per_frame_ms().items()},
            "frames_per_second": round(counters.frames / seconds, 2) if seconds > 0 else 0.0,
            "latency_ms": {"median": round(counters.latency_ms(0.5), 1),
                           "p99": round(counters.latency_ms(0.99), 1)},
            "frames_dropped": counters.dropped, "pipelined": pipelined,
            "frames_without_face": t.frames_without_face, "targets": len(targets.files),
            "target_cache_hit": bool(targets.cache_hit),
            "output": None if output is None else str(output), "backends": backends}


def _summary_lines(summary: dict) -> list[str]:
    ms, without = summary["per_frame_ms"], summary["frames_without_face"]
    lines = [f"{summary['frames']} frames; per frame: landmarks {ms['landmarks']:.1f} ms, generator "
             f"{ms['generator']:.1f} ms, I/O {ms['io']:.1f} ms; target cache "
             f"{'hit' if summary['target_cache_hit'] else 'miss'}"
             + (f"; {without} frames without a face (leading ones skipped, later ones held the last "
                "landmarks)" if without else ""),
             f"end to end: {summary['frames_per_second']:.1f} frames per second "
             f"({'pipelined' if summary['pipelined'] else 'one step after another'}), latency "
             f"{summary['latency_ms']['median']:.0f} ms median, {summary['latency_ms']['p99']:.0f} ms p99"
             + (f"; {summary['frames_dropped']} frames dropped to keep up"
                if summary["frames_dropped"] else "")]
    kinds = sorted(set(summary["backends"].values()))
    if kinds:
        lines.append("backend: " + (kinds[0] if len(kinds) == 1 else ", ".join(
            f"{name} {kind}" for name, kind in summary["backends"].items())))
    if summary["output"] is not None:
        lines.append(f"wrote {summary['output']}")
    return lines


if __name__ == "__main__":
    main()
