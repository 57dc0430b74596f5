"""mnt-bench's measurements: the paper's Table 6 components and Table 7 totals, each backend
timed interleaved with PyTorch eager FP32 from the same checkpoint in the same process.

Every row is measured as pairs: one call of the backend under test, one of the baseline,
in alternating order, after a warm-up of both. Side by side, drifts of the machine
(clock, other load) hit both alike, so `speedup_vs_torch` is a ratio of neighbours.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnt.export.errors import ExportError
from mnt.runtime.align import Crop, align, template
from mnt.runtime.backends.base import Backend, BackendState
from mnt.runtime.landmarkers.base import LandmarkBackend
from mnt.runtime.landmarkers.mediapipe_mesh import MediaPipeLandmarks
from mnt.runtime.pipeline import DriverStream, Targets
from mnt.runtime.rasterize import rasterize, to_model_input
from mnt.runtime.reenactor import Reenactor, TargetState
from mnt.runtime.video import VideoWriter, read_frames, video_info

BASELINE = "torch"


@dataclass
class Row:
    component: str
    backend: str
    precision: str
    k: int
    ms: list[float]
    gflop: float | None = None  # work per call, counted once from the PyTorch model
    baseline_ms: list[float] | None = None  # the interleaved PyTorch samples
    extra: dict[str, Any] = field(default_factory=dict)
    streams: int = 1  # concurrent streams on the model (the streaming rows)
    pipelined: bool = False  # the frame path's stages on threads of their own

    @property
    def median(self) -> float:
        return statistics.median(self.ms)

    def speedup(self) -> float | None:
        return statistics.median(self.baseline_ms) / self.median if self.baseline_ms else None


class Timed(Backend):
    """A backend that adds up the time spent in its calls (to split a frame into the
    networks and everything else). A stream's state goes on to `inner`'s own, so that
    streams run as concurrently, and with their resident inputs, as on `inner` itself."""

    STATEFUL = True

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner.component)
        self.inner, self.seconds = inner, 0.0
        self._adding = threading.Lock()  # streams call from several threads

    def activate_impl(self) -> None:
        self.inner.activate()

    def _timed(self, feeds: dict[str, np.ndarray], state: BackendState | None) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        try:
            return self.inner.infer(feeds, state)
        finally:
            with self._adding:
                self.seconds += time.perf_counter() - started

    def infer_impl(self, ready: dict[str, np.ndarray], dims: dict[str, int]) -> dict[str, np.ndarray]:
        return self._timed(ready, None)

    def new_state_impl(self, state: BackendState) -> BackendState:
        return self.inner.new_state(state.resident)

    def infer_state_impl(self, ready: dict[str, np.ndarray], dims: dict[str, int],
                         state: BackendState) -> dict[str, np.ndarray]:
        # the resident inputs are already in the inner state: only the others are passed on
        return self._timed({n: a for n, a in ready.items() if n not in state.resident}, state.impl)

    def release_state_impl(self, state: BackendState) -> None:
        state.impl.close()

    def deactivate_impl(self) -> None:
        self.inner.deactivate()


@dataclass
class Contender:
    """One backend under test, a contender (or the baseline), with the model it serves."""

    name: str
    precision: str
    model: Reenactor
    timed: dict[str, Timed]

    def network_seconds(self) -> float:
        return sum(t.seconds for t in self.timed.values())


def open_contender(name: str, precision: str, folder: Path, backends: dict[str, Backend]) -> Contender:
    timed = {n: Timed(b) for n, b in backends.items()}
    return Contender(name, precision, Reenactor(folder, backends=dict(timed)), timed)


def paired(run: Callable[[], object], baseline: Callable[[], object] | None, warmup: int,
           iterations: int) -> tuple[list[float], list[float] | None]:
    """Milliseconds of `iterations` calls of `run` and, interleaved, of `baseline`."""
    for _ in range(warmup):
        run()
        if baseline:
            baseline()
    ms: list[float] = []
    base: list[float] = []
    for i in range(iterations):
        order = [(run, ms), (baseline, base)] if baseline else [(run, ms)]
        for fn, samples in order if i % 2 == 0 else reversed(order):
            started = time.perf_counter()
            fn()  # type: ignore[misc]
            samples.append(1e3 * (time.perf_counter() - started))
    return ms, (base if baseline else None)


@dataclass
class Inputs:
    """Real inputs through the runtime's own preprocessing: target photos detected and
    aligned, driver frames decoded, a driver crop with its landmarks."""

    photos: list[np.ndarray]
    target_crops: list[Crop]
    driver_frames: list[np.ndarray]
    driver_crop: Crop
    video: Path
    rate: float


def prepare_inputs(video: Path, photos: list[np.ndarray], size: int, model: Reenactor,
                   frames: int) -> Inputs:
    reference = template(model.stats, size)
    with MediaPipeLandmarks(static_image_mode=True) as detector:
        crops = []
        for i, photo in enumerate(photos):
            face = detector.detect(photo)
            if face is None:
                raise ExportError(f"target photo {i + 1}: no human face found")
            crops.append(align(photo, face.landmarks, reference, size))
        driver_frames = list(read_frames(video, limit=frames))
        found = next(((x, face) for x in driver_frames if (face := detector.detect(x)) is not None), None)
        if found is None:
            raise ExportError(f"no human face in the first {len(driver_frames)} frames of {video}")
    frame, face = found
    rate, _, _ = video_info(video)
    return Inputs(photos, crops, driver_frames, align(frame, face.landmarks, reference, size),
                  video, float(rate))


def _target_feeds(crops: list[Crop], size: int) -> dict[str, np.ndarray]:
    return {"target_images": np.stack([to_model_input(c.image) for c in crops]),
            "target_landmarks": np.stack([to_model_input(rasterize(c.landmarks, size)) for c in crops])}


def _targets(inputs: Inputs, k: int) -> list[Crop]:
    return [inputs.target_crops[i % len(inputs.target_crops)] for i in range(k)]


def encoded_targets(model: Reenactor, inputs: Inputs, k: int) -> Targets:
    """K of the target crops, encoded by `model`, as a driver stream takes them."""
    crops = _targets(inputs, k)
    state, _ = model.encode_targets([c.image for c in crops], [c.landmarks for c in crops])
    return Targets(crops, [], inputs.photos[0], state, cache_hit=False)


class Bench:
    """The rows for one contender against the baseline (None: the baseline alone)."""

    def __init__(self, contender: Contender, baseline: Contender | None, inputs: Inputs,
                 flops: Mapping[tuple[str, int], float], warmup: int, iterations: int,
                 frames: int, say: Callable[[str], None], report_baseline: bool = False) -> None:
        """`report_baseline`: also return the baseline's own rows (once, not per contender)."""
        self.contender, self.baseline, self.inputs = contender, baseline, inputs
        self.report_baseline = report_baseline and baseline is not None
        self.flops, self.warmup, self.iterations, self.frames = flops, warmup, iterations, frames
        self.say = say
        self.size = contender.model.size

    def _rows(self, component: str, k: int, samples: Mapping[str, list[float]], gflop: float | None,
              extra: Mapping[str, dict[str, Any]] | None = None) -> list[Row]:
        base = samples[self.baseline.name] if self.baseline else None
        contenders = [self.contender, *([self.baseline] if self.report_baseline else [])]
        return [Row(component, e.name, e.precision, k, samples[e.name], gflop, base,
                    dict((extra or {}).get(e.name, {}))) for e in contenders if e]

    def _paired(self, component: str, k: int, make: Callable[[Contender], Callable[[], object]],
                gflop: float | None) -> list[Row]:
        self.say(f"  {component} (K={k}) on {self.contender.name}"
                 + (f" and {self.baseline.name}" if self.baseline else ""))
        ms, base = paired(make(self.contender), make(self.baseline) if self.baseline else None,
                          self.warmup, self.iterations)
        samples = {self.contender.name: ms, **({self.baseline.name: base} if self.baseline and base else {})}
        return self._rows(component, k, samples, gflop)

    def components(self, k: int, driver_lt: bool = True) -> Iterator[Row]:
        """Table 6: each network and landmark transformer on its own (the driver's
        landmark transformer does not depend on K: `driver_lt` for one K only)."""
        crops = _targets(self.inputs, k)
        feeds = _target_feeds(crops, self.size)
        images = feeds["target_images"]
        points = np.stack([c.landmarks for c in crops])
        driver = self.inputs.driver_crop
        disentangler = self.flops.get(("landmark_disentangler", 1))

        def encoder(e: Contender) -> Callable[[], object]:
            return lambda: e.model.backends["target_encoder"].infer(feeds)

        yield from self._paired("target_encoder", k, encoder, self.flops.get(("target_encoder", k)))

        def target_lt(e: Contender) -> Callable[[], object]:
            return lambda: e.model.transformer.target_identity(images, points)

        yield from self._paired("target_landmark_transformer", k, target_lt,
                        disentangler * k if disentangler else None)
        states = {e.name: e.model.encode_targets([c.image for c in crops], list(points))[0]
                  for e in (self.contender, self.baseline) if e}
        drawn = to_model_input(rasterize(driver.landmarks, self.size))[None]

        def generator(e: Contender) -> Callable[[], object]:
            state = states[e.name]
            return lambda: e.model.backends["generator"].infer({"driver_landmarks": drawn, **state.feeds})

        yield from self._paired("generator", k, generator, self.flops.get(("generator", k)))

        def driver_transformer(e: Contender) -> Callable[[], object]:
            state = states[e.name]
            return lambda: e.model.driver_landmarks(state, driver.image, driver.landmarks)

        if driver_lt:
            yield from self._paired("driver_landmark_transformer", k, driver_transformer, disentangler)

    def target_encoding(self, k: int) -> list[Row]:
        """Table 7, once per target set: detect and align K photos, encode them (target
        encoder and target landmark transformer), no cache."""
        photos = [self.inputs.photos[i % len(self.inputs.photos)] for i in range(k)]
        detector = MediaPipeLandmarks(static_image_mode=True)
        reference = template(self.contender.model.stats, self.size)

        def encode(e: Contender) -> Callable[[], object]:
            def run() -> TargetState:
                crops = []
                for photo in photos:
                    face = detector.detect(photo)
                    assert face is not None  # prepare_inputs found it
                    crops.append(align(photo, face.landmarks, reference, self.size))
                return e.model.encode_targets([c.image for c in crops], [c.landmarks for c in crops])[0]
            return run

        disentangler = self.flops.get(("landmark_disentangler", 1))
        encoder = self.flops.get(("target_encoder", k))
        try:
            return self._paired("target_encoding", k, encode,
                             encoder + k * disentangler if encoder and disentangler else None)
        finally:
            detector.close()

    def driver_generation(self, k: int) -> list[Row]:
        """Table 7, per frame, end to end: decode, track, align, landmark transformer,
        rasterise, generator, encode to H.264; frames of the contender and the baseline
        alternate. Also splits the contender's frame into networks and everything else."""
        contenders = [e for e in (self.contender, self.baseline) if e]
        self.say(f"  driver_generation (K={k}, {self.frames} frames) on "
                 + " and ".join(e.name for e in contenders))
        samples: dict[str, list[float]] = {e.name: [] for e in contenders}
        outside: dict[str, list[float]] = {e.name: [] for e in contenders}
        with tempfile.TemporaryDirectory(prefix="mnt-bench-") as tmp:
            streams, writers = {}, {}
            for e in contenders:
                targets = encoded_targets(e.model, self.inputs, k)
                streams[e.name] = DriverStream(e.model, targets, MediaPipeLandmarks(static_image_mode=False),
                                               self.inputs.rate)
                writers[e.name] = VideoWriter(Path(tmp) / f"{e.name}.mp4", round(self.inputs.rate),
                                              self.size, self.size)
            try:
                for i, (frame, decode) in enumerate(_decoded(self.inputs.video, self.warmup + self.frames)):
                    for e in contenders if i % 2 == 0 else reversed(contenders):
                        network = e.network_seconds()
                        started = time.perf_counter()
                        produced = streams[e.name](frame)
                        if produced is not None:
                            writers[e.name].write(produced[0])
                        seconds = decode + time.perf_counter() - started
                        if i >= self.warmup and produced is not None:
                            samples[e.name].append(1e3 * seconds)
                            outside[e.name].append(1e3 * (seconds - (e.network_seconds() - network)))
            finally:
                for e in contenders:
                    writers[e.name].abort()
                    streams[e.name].close()  # its backend states
                    streams[e.name].landmarker.close()
        if not samples[self.contender.name]:
            raise ExportError(f"no frame of {self.inputs.video} had a face to time")
        extra = {}
        for e in contenders:
            ms, rest = statistics.median(samples[e.name]), statistics.median(outside[e.name])
            extra[e.name] = {"outside_networks_ms": round(rest, 2),
                             "outside_networks_fraction": round(rest / ms, 3)}
        disentangler = self.flops.get(("landmark_disentangler", 1))
        generator = self.flops.get(("generator", k))
        return self._rows("driver_generation", k, samples,
                          generator + disentangler if generator and disentangler else None, extra)


def _decoded(video: Path, count: int) -> Iterator[tuple[np.ndarray, float]]:
    """(frame, seconds its decoding took) for `count` frames, reopening a short video."""
    produced = 0
    while produced < count:
        frames = read_frames(video)
        while produced < count:
            started = time.perf_counter()
            frame = next(frames, None)
            if frame is None:
                break
            produced += 1
            yield frame, time.perf_counter() - started
        else:
            frames.close()  # type: ignore[attr-defined]
        if produced == 0:
            raise ExportError(f"{video} has no frames")


def _tracking(tracker: LandmarkBackend, frames: list[np.ndarray]) -> Callable[[], object]:
    """One call: the tracker on the next of `frames` (round and round)."""
    calls = itertools.count()
    return lambda: tracker.detect(frames[next(calls) % len(frames)], human_check=False)


def landmark_detector(inputs: Inputs, warmup: int, iterations: int,
                      engines: Mapping[str, tuple[str, Callable[[], LandmarkBackend]]] | None = None
                      ) -> list[Row]:
    """Table 6's landmark detector, tracking driver frames: mediapipe's face mesh and, call
    by call interleaved with it on the same frames, the artefact folder's face components
    on each engine of `engines` (name -> (precision, a tracker factory))."""
    frames = inputs.driver_frames
    with MediaPipeLandmarks(static_image_mode=False) as reference:
        mediapipe = _tracking(reference, frames)
        if not engines:
            ms, _ = paired(mediapipe, None, warmup, iterations)
            return [Row("landmark_detector", "mediapipe", "fp32", 1, ms, extra={"landmarks": "mediapipe"})]
        rows: list[Row] = []
        for name, (precision, make) in engines.items():
            with make() as tracker:
                ms, base = paired(_tracking(tracker, frames), mediapipe, warmup, iterations)
            assert base is not None
            if not rows:  # mediapipe's own row once, from its first pairing
                rows.append(Row("landmark_detector", "mediapipe", "fp32", 1, base,
                                extra={"landmarks": "mediapipe"}))
            speedup = statistics.median(base) / statistics.median(ms)
            rows.append(Row("landmark_detector", name, precision, 1, ms,
                            extra={"landmarks": "engines", "speedup_vs_mediapipe": round(speedup, 2)}))
    return rows
