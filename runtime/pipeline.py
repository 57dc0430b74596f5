"""From photos and video frames to reenacted frames: targets are found, aligned and
encoded once; each driver frame is tracked, smoothed, aligned, transformed and generated."""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnt.runtime.align import Crop, CropTracker, align, template
from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.images import IMAGE_SUFFIXES, read_image
from mnt.runtime.landmarkers.base import LandmarkBackend
from mnt.runtime.reenactor import Reenactor, TargetState
from mnt.runtime.smoothing import OneEuroFilter


@dataclass
class Targets:
    crops: list[Crop]
    files: list[Path]
    photo: np.ndarray  # the first target photo at full resolution (for paste-back)
    state: TargetState
    cache_hit: bool


def load_targets(folder: str | Path, model: Reenactor, landmarker: LandmarkBackend,
                 cache: str | Path | None, say: Callable[[str], None]) -> Targets:
    folder = Path(folder)
    cache = Path(cache) if cache is not None else None
    if not folder.is_dir():
        raise RuntimeStageError(f"targets folder {folder} does not exist")
    candidates = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not candidates:
        raise RuntimeStageError(f"targets folder {folder} is empty",
                                hint="put 1 to 8 photos of one person in it")
    photos: list[tuple[Path, np.ndarray]] = []
    for path in candidates:
        image = read_image(path) if path.suffix.lower() in IMAGE_SUFFIXES else None
        if image is None:
            say(f"warning: skipping {path.name}: not a readable image")
        else:
            photos.append((path, image))
    if not photos:
        raise RuntimeStageError(f"no readable photos in {folder}")
    most = model.target_range[1]
    if len(photos) > most:
        say(f"warning: {len(photos)} photos in {folder}; using the first {most}: "
            + ", ".join(p.name for p, _ in photos[:most]))
        photos = photos[:most]
    reference = template(model.stats, model.size)
    crops = []
    for path, image in photos:
        face = landmarker.detect(image)
        if face is None:
            raise RuntimeStageError(f"{path}: no human face found",
                                    hint="use a photo showing one person's face, roughly frontal")
        if face.count > 1:
            say(f"note: {path.name} shows {face.count} faces; using the largest")
        crops.append(align(image, face.landmarks, reference, model.size))
    state, hit = model.encode_targets([c.image for c in crops], [c.landmarks for c in crops], cache)
    return Targets(crops, [p for p, _ in photos], photos[0][1], state, hit)


@dataclass
class Timings:
    landmarks: float = 0.0
    generator: float = 0.0
    io: float = 0.0
    frames: int = 0
    frames_without_face: int = 0

    def per_frame_ms(self) -> dict[str, float]:
        n = max(self.frames, 1)
        return {"landmarks": 1e3 * self.landmarks / n, "generator": 1e3 * self.generator / n,
                "io": 1e3 * self.io / n}


@dataclass
class DriverStream:
    """Per-stream state (whisper.cpp's split: the model is shared, this is not): the
    tracker's last face, the landmark smoother and the counters."""

    model: Reenactor
    targets: Targets
    landmarker: LandmarkBackend
    rate: float
    transform: bool = True
    smoother: OneEuroFilter = field(default_factory=OneEuroFilter)
    timings: Timings = field(default_factory=Timings)
    _last: np.ndarray | None = None
    _lost: bool = False
    _crops: CropTracker | None = None

    def __post_init__(self) -> None:
        # the smoother's clock is frames / rate
        rate = self.rate
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) \
                or not (math.isfinite(rate) and rate > 0):
            raise RuntimeStageError(f"DriverStream: rate must be frames per second > 0, got {self.rate!r}",
                                    hint="pass the driver video's frame rate, e.g. video_info(path)[0]")

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, Crop] | None:
        """One driver frame (uint8 RGB) -> (reenacted face, the driver's crop), or None while
        no face has been seen yet (such leading frames are skipped and counted)."""
        started = time.perf_counter()
        if self._crops is None:
            self._crops = CropTracker(template(self.model.stats, self.model.size), self.model.size)
        # The face mesh tracks between frames by itself; the (slower) human-face check runs
        # only when a face is acquired: the first frame, or after the face was lost.
        acquiring = self._last is None or self._lost
        face = self.landmarker.detect(frame, human_check=acquiring)
        if face is None:
            self.timings.frames_without_face += 1
            if self._last is None:
                return None
            self._lost = True
            points = self._last  # hold the last landmarks
        else:
            if self._lost:
                self.smoother.reset()
            self._lost = False
            points = self.smoother(face.landmarks, self.timings.frames / self.rate)
            self._last = points
        crop = align(frame, points, self._crops.reference, self.model.size, self._crops(points))
        driver = crop.landmarks
        if self.transform:
            driver = self.model.driver_landmarks(self.targets.state, crop.image, driver)
        landmarked = time.perf_counter()
        result = self.model.generate(self.targets.state, driver)
        self.timings.landmarks += landmarked - started
        self.timings.generator += time.perf_counter() - landmarked
        self.timings.frames += 1
        return result, crop
