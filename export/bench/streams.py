"""mnt-bench's streaming rows: N concurrent streams on one loaded model, each with its own
landmark tracker, driven through the runtime's frame path (`mnt.runtime.stages.reenact`,
pipelined or sequential) from a thread of its own and encoded to H.264, as `mnt-run`
does for a file.

Per row: the total frames per second over all streams while all of them run, the latency
from capture to hand-over (median and 99th percentile) over every stream's frames after
its warm-up, the frames dropped (none from a file) and the input bytes handed to the
engines per frame (the resident target state aside).
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnt.export.bench.runner import Row
from mnt.export.errors import ExportError
from mnt.runtime.landmarkers.base import LandmarkBackend
from mnt.runtime.pipeline import DriverStream, Targets
from mnt.runtime.reenactor import Reenactor
from mnt.runtime.sources import VideoSource
from mnt.runtime.stages import Counters, reenact
from mnt.runtime.video import VideoWriter

COMPONENT = "driver_streams"
LANDMARK_KINDS = {"OnnxMeshLandmarks": "engines", "MediaPipeLandmarks": "mediapipe", "FanLandmarks": "fan"}


class LoopedSource(VideoSource):
    """`count` frames of a video file, from its start again where it is shorter; times run
    on across the loops (the smoother and the writer want them increasing). Not live."""

    def __init__(self, path: str | Path, count: int) -> None:
        super().__init__(path)
        self.count = count

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        given, offset = 0, 0.0
        while given < self.count:
            frames, last = super().__iter__(), None
            try:
                for at, frame in frames:
                    yield offset + at, frame
                    given, last = given + 1, at
                    if given == self.count:
                        return
            finally:
                frames.close()  # type: ignore[attr-defined]
            if last is None:
                raise ExportError(f"{self.path} has no frames")
            offset += last + 1 / float(self.rate)


@dataclass
class StreamRun:
    """What one stream's thread measured (times: time.monotonic)."""

    started: float  # when the start barrier let it go
    handovers: list[float]  # after each frame was handed over (and its face encoded)
    latencies: list[float]  # seconds, capture to hand-over, in frame order
    dropped: int
    bytes_per_frame: float
    landmarks: str  # the tracker's kind: engines, mediapipe or fan


def throughput(runs: Sequence[StreamRun], warmup: int) -> float:
    """Frames per second over all streams in the window where every stream runs warmed up:
    from the last stream's end of warm-up to the first stream's last frame. (Where that
    window is empty, as with a frame or two: every timed frame over the whole span.)"""
    warm = [r.handovers[warmup - 1] if warmup else r.started for r in runs]
    start, end = max(warm), min(r.handovers[-1] for r in runs)
    inside = sum(start < t <= end for r in runs for t in r.handovers)
    if end > start and inside:
        return inside / (end - start)
    timed = sum(len(r.handovers) - warmup for r in runs)
    return timed / max(max(r.handovers[-1] for r in runs) - min(warm), 1e-9)


def _drive(model: Reenactor, targets: Targets, video: Path, count: int, pipelined: bool,
           tracker: Callable[[], LandmarkBackend], barrier: threading.Barrier, out: Path) -> StreamRun:
    """One stream, on the calling thread: set up, wait for the others, run `count` frames."""
    landmarker = stream = writer = None
    try:
        landmarker = tracker()
        source = LoopedSource(video, count)
        stream = DriverStream(model, targets, landmarker, float(source.rate))
        writer = VideoWriter(out, source.rate, model.size, model.size)
        stream.engine  # noqa: B018 - its backend states made (the target state handed over) before the clock
        barrier.wait()
    except BaseException:
        barrier.abort()  # the other streams stop waiting
        _close(landmarker, stream, writer)
        raise
    try:
        started, counters, handovers = time.monotonic(), Counters(), []
        # (closed before the stream is: its stages stop using the stream first)
        with closing(reenact(source, stream, pipelined=pipelined, counters=counters)) as items:
            for item in items:
                if item.produced is not None:
                    writer.write(item.produced[0], item.at)
                handovers.append(time.monotonic())
        # (read before close: DriverStream.engine makes a new Stream when asked after it)
        return StreamRun(started, handovers, counters.latencies, counters.dropped,
                         stream.engine.bytes_per_frame,
                         LANDMARK_KINDS.get(type(landmarker).__name__, type(landmarker).__name__))
    finally:
        _close(landmarker, stream, writer)


def _close(landmarker: LandmarkBackend | None, stream: DriverStream | None,
           writer: VideoWriter | None) -> None:
    if writer is not None:
        writer.abort()  # the video is not wanted; its frames were encoded as they came
    if stream is not None:
        stream.close()
    if landmarker is not None:
        landmarker.close()


def run_streams(model: Reenactor, targets: Targets, video: Path, n: int, pipelined: bool, count: int,
                tracker: Callable[[], LandmarkBackend]) -> list[StreamRun]:
    """`n` streams of `count` frames each on `model`, from `n` threads started together."""
    barrier = threading.Barrier(n)
    with tempfile.TemporaryDirectory(prefix="mnt-bench-streams-") as tmp, \
            ThreadPoolExecutor(n, thread_name_prefix="mnt-bench-stream") as pool:
        futures = [pool.submit(_drive, model, targets, video, count, pipelined, tracker, barrier,
                               Path(tmp) / f"stream{i}.mp4") for i in range(n)]
        wait(futures)
    errors = [e for f in futures if (e := f.exception()) is not None]
    if errors:  # the stream that failed, not those it left waiting at the barrier
        raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0])
    return [f.result() for f in futures]


def stream_row(name: str, precision: str, k: int, n: int, pipelined: bool, runs: Sequence[StreamRun],
               warmup: int, targets: Targets) -> Row:
    latencies = [x for r in runs for x in r.latencies[warmup:]]
    quantile = Counters(latencies=latencies).latency_ms
    extra = {"frames": len(latencies), "frames_per_second": round(throughput(runs, warmup), 2),
             "latency_ms_median": round(quantile(0.5), 2), "latency_ms_p99": round(quantile(0.99), 2),
             "dropped": sum(r.dropped for r in runs),
             "bytes_per_frame": round(float(np.mean([r.bytes_per_frame for r in runs]))),
             "resident_bytes": sum(a.nbytes for a in targets.state.feeds.values()),
             "landmarks": runs[0].landmarks}
    return Row(COMPONENT, name, precision, k, [1e3 * x for x in latencies], extra=extra,
               streams=n, pipelined=pipelined)


def stream_rows(model: Reenactor, name: str, precision: str, targets: Targets, video: Path,
                counts: Sequence[int], warmup: int, frames: int, tracker: Callable[[], LandmarkBackend],
                say: Callable[[str], None]) -> list[Row]:
    """For each stream count, pipelined and sequential, in alternating order (a drift of the
    machine then hits both alike)."""
    rows = []
    for i, n in enumerate(counts):
        for pipelined in (True, False) if i % 2 == 0 else (False, True):
            say(f"  {COMPONENT} (K={targets.state.k}, {n} stream{'s' * (n > 1)}, "
                f"{'pipelined' if pipelined else 'sequential'}, {frames} frames each) on {name}")
            runs = run_streams(model, targets, video, n, pipelined, warmup + frames, tracker)
            rows.append(stream_row(name, precision, targets.state.k, n, pipelined, runs, warmup, targets))
    return rows
