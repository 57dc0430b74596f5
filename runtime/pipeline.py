"""From photos and video frames to reenacted frames: targets are found, aligned and
encoded once; each driver frame is tracked, smoothed, aligned, transformed and generated."""

from __future__ import annotations

import errno
import math
import numbers
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mnt.runtime.align import Crop, CropTracker, align, template
from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.images import IMAGE_SUFFIXES, read_image
from mnt.runtime.landmarkers.base import LandmarkBackend
from mnt.runtime.reenactor import Reenactor, Stream, TargetState
from mnt.runtime.smoothing import OneEuroFilter


@dataclass
class Targets:
    crops: list[Crop]
    files: list[Path]
    photo: np.ndarray  # the first target photo at full resolution (for paste-back)
    state: TargetState
    cache_hit: bool


# Target photos are scaled down to this many pixels on their longer side as they are read:
# the crops are the model's size, and 8 photos of 8000x6000 would hold 1.2 GB.
MAX_PHOTO_SIDE = 4096
MIN_PHOTO_SIDE = 32  # below this no face detector finds anything


def load_targets(folder: str | Path, model: Reenactor, landmarker: LandmarkBackend,
                 cache: str | Path | None, say: Callable[[str], None]) -> Targets:
    photos = read_photos(Path(folder), model.target_range[1], say)
    return encode_photos(photos, model, landmarker, Path(cache) if cache is not None else None, say)


def read_photos(folder: Path, most: int, say: Callable[[str], None]) -> list[tuple[Path, np.ndarray]]:
    """Up to `most` readable photos of `folder` (name order), decoded and checked."""
    if not folder.is_dir():
        raise RuntimeStageError(f"targets folder {folder} does not exist")
    candidates = _candidates(folder, say)
    if not candidates:
        what = "holds no photos" if any(folder.iterdir()) else "is empty"
        raise RuntimeStageError(f"targets folder {folder} {what}",
                                hint="put 1 to 8 photos of one person in it")
    photos: list[tuple[Path, np.ndarray]] = []
    for index, path in enumerate(candidates):
        if len(photos) == most:  # the rest are never decoded
            unused = ", ".join(p.name for p in candidates[index:])
            say(f"warning: more than {most} photos in {folder}; using the first {most}: "
                + ", ".join(p.name for p, _ in photos) + f" (not used: {unused})")
            break
        image = read_image(path) if path.suffix.lower() in IMAGE_SUFFIXES else None
        if image is None:
            say(f"warning: skipping {path.name}: not a readable image (damaged, cut short or not a photo)")
            continue
        photos.append((path, checked_photo(path, image)))
    if not photos:
        raise RuntimeStageError(f"no readable photos in {folder}")
    return photos


def checked_photo(name: Path | str, image: np.ndarray) -> np.ndarray:
    """A decoded target photo, refused when too small, scaled to MAX_PHOTO_SIDE at most."""
    if min(image.shape[:2]) < MIN_PHOTO_SIDE:
        raise RuntimeStageError(f"{name}: {image.shape[1]}x{image.shape[0]} pixels is too small to show "
                                "a face", hint="use a photo showing one person's face, roughly frontal")
    return _within(image, MAX_PHOTO_SIDE)


def encode_photos(photos: list[tuple[Path, np.ndarray]], model: Reenactor, landmarker: LandmarkBackend,
                  cache: Path | None, say: Callable[[str], None]) -> Targets:
    """Decoded photos (name, uint8 RGB) -> found, aligned and encoded targets."""
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
    state, hit = model.encode_targets([c.image for c in crops], [c.landmarks for c in crops], cache, say)
    return Targets(crops, [p for p, _ in photos], photos[0][1], state, hit)


def _candidates(folder: Path, say: Callable[[str], None]) -> list[Path]:
    """The folder's visible files, sorted; broken links and link loops named and skipped."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        try:
            path.stat()
        except OSError as err:
            what = "a link loop" if err.errno == errno.ELOOP else "a broken link"
            say(f"warning: skipping {path.name}: {what}")
            continue
        if path.is_file():
            found.append(path)
    return found


def _within(image: np.ndarray, side: int) -> np.ndarray:
    scale = side / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


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
    """One stream's state (whisper.cpp's split: the model is shared, this is not): the
    model's Stream (its backend states, the target state resident in them), the tracker's
    last face, the landmark smoother and the counters. A frame goes through two steps,
    `landmarks` then `generate`, which the pipelined path runs as stages on threads of
    their own; calling the stream does both."""

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
    _engine: Stream | None = None  # made on first use
    _making: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _closed: bool = False
    _produced: int = 0  # frames step 1 gave landmarks for (the clock without `at`: frames / rate)

    def __post_init__(self) -> None:
        # the smoother's clock is frames / rate
        rate = self.rate
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) \
                or not (math.isfinite(rate) and rate > 0):
            raise RuntimeStageError(f"DriverStream: rate must be frames per second > 0, got {self.rate!r}",
                                    hint="pass the driver video's frame rate, e.g. video_info(path)[0]")

    @property
    def engine(self) -> Stream:
        with self._making:  # (the two steps may first ask at once, from two stages' threads)
            if self._closed:
                raise RuntimeStageError("DriverStream used after close()")
            if self._engine is None:
                self._engine = self.model.stream(self.targets.state)
            return self._engine

    def __call__(self, frame: np.ndarray, at: float | None = None) -> tuple[np.ndarray, Crop] | None:
        """One driver frame (uint8 RGB) at `at` seconds (default: frames so far / rate) ->
        (reenacted face, the driver's crop), or None while no face has been seen yet (such
        leading frames are skipped and counted)."""
        found = self.landmarks(frame, at)
        return None if found is None else self.generate(*found)

    def landmarks(self, frame: np.ndarray, at: float | None = None) -> tuple[Crop, np.ndarray] | None:
        """Step 1: track, smooth, crop and (with `transform`) transform -> (the driver's crop,
        the landmarks to drive the generator with), or None while no face was seen yet."""
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
            points = self.smoother(face.landmarks, self._produced / self.rate if at is None else at)
            self._last = points
        self._produced += 1
        crop = align(frame, points, self._crops.reference, self.model.size, self._crops(points))
        driver = crop.landmarks
        if self.transform:
            driver = self.engine.driver_landmarks(crop.image, driver)
        self.timings.landmarks += time.perf_counter() - started
        return crop, driver

    def generate(self, crop: Crop, driver: np.ndarray) -> tuple[np.ndarray, Crop]:
        """Step 2: the reenacted face for step 1's landmarks -> (face, the driver's crop)."""
        started = time.perf_counter()
        result = self.engine.generate(driver)
        self.timings.generator += time.perf_counter() - started
        self.timings.frames += 1
        return result, crop

    def close(self) -> None:
        """Free the stream's backend states (the model stays loaded)."""
        with self._making:
            self._closed = True
            if self._engine is not None:
                self._engine.close()
                self._engine = None
