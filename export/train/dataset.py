"""Training data from talking-head videos, made by the runtime's own code: mediapipe
landmarks (`mnt.runtime.landmarkers.mediapipe_mesh`), target crops fitted per frame and driver crops that
follow the head as `mnt-run` makes them (`mnt.runtime.align`), the supplement's
rasterised landmarks. Each clip gives one identity; the last `holdout` of every clip is
held back for evaluation.

Cached on disk in two steps: landmarks per video (the slow part, keyed by the video's
sha256), then crops per video at one size and one set of landmark statistics.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mnt.export.errors import ExportError
from mnt.export.train.stats import coefficients, fit_stats, identity
from mnt.runtime.align import CropTracker, align, template
from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.files import atomic_path, sha256_file
from mnt.runtime.landmarks import LandmarkStats
from mnt.runtime.rasterize import rasterize, to_model_input
from mnt.runtime.video import read_frames

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm"}
MIN_FRAMES = 8  # a clip needs this many frames with a face on each side of the split


@dataclass
class Clip:
    """One video's usable frames (those with a face), in both crops."""

    name: str
    frames: np.ndarray  # (T,) frame indices in the video
    split: int  # frames[i] < split are for training, the rest held back
    target_images: np.ndarray  # (T, S, S, 3) uint8: per-frame fitted crops, as targets get
    target_landmarks: np.ndarray  # (T, 68, 3) in target-crop pixels
    driver_images: np.ndarray  # (T, S, S, 3) uint8: crops that follow the head, as drivers get
    driver_landmarks: np.ndarray  # (T, 68, 3) in driver-crop pixels
    driver_matrices: np.ndarray  # (T, 2, 3) frame -> driver crop
    target_matrices: np.ndarray  # (T, 2, 3) frame -> target crop

    @property
    def train(self) -> np.ndarray:
        return np.flatnonzero(self.frames < self.split)

    @property
    def held_back(self) -> np.ndarray:
        return np.flatnonzero(self.frames >= self.split)

    def spread_targets(self, k: int) -> list[int]:
        """K target frames spread evenly over the training part (evaluation and samples)."""
        train = self.train
        return [int(t) for t in train[np.linspace(0, len(train) - 1, k).round().astype(int)]]


@dataclass
class Dataset:
    clips: list[Clip]
    stats: LandmarkStats
    size: int

    def coefficients(self, clip: Clip) -> np.ndarray:
        """Normalised expression coefficients of every frame of `clip` (its identity from
        its training frames): the disentangler's targets."""
        ident = identity(self.stats, clip.target_landmarks[clip.train])
        return coefficients(self.stats, clip.target_landmarks, ident)


def find_videos(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ExportError(f"videos folder {folder} does not exist",
                          hint="give a folder of talking-head clips, one person per clip")
    videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if len(videos) < 2:
        raise ExportError(f"{folder} holds {len(videos)} video(s); training needs at least 2 "
                          f"({', '.join(sorted(VIDEO_SUFFIXES))})")
    return videos


def _landmarks(video: Path, key: str, cache: Path, say: Callable[[str], None]
               ) -> tuple[np.ndarray, np.ndarray]:
    """(T, 68, 3) landmarks in frame pixels and (T,) whether a face was found, cached."""
    from mnt.runtime.landmarkers.mediapipe_mesh import MediaPipeLandmarks

    cached = cache / f"{key}.npz"
    if cached.is_file():
        with np.load(cached) as data:
            return data["landmarks"], data["found"]
    say(f"  finding faces in {video.name}")
    points, found = [], []
    with MediaPipeLandmarks(static_image_mode=False) as faces:
        for frame in read_frames(video):
            # The slow human-face check only while no face is tracked, as mnt-run does.
            face = faces.detect(frame, human_check=not found or not found[-1])
            found.append(face is not None)
            points.append(face.landmarks if face is not None else np.full((68, 3), np.nan))
    landmarks, found_array = np.asarray(points, np.float64), np.asarray(found, bool)
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_path(cached) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, landmarks=landmarks, found=found_array)
    return landmarks, found_array


def _crops(video: Path, landmarks: np.ndarray, found: np.ndarray, stats: LandmarkStats,
           size: int) -> dict[str, np.ndarray]:
    reference = template(stats, size)
    tracker = CropTracker(reference, size)
    arrays: dict[str, list[np.ndarray]] = {k: [] for k in (
        "frames", "target_images", "target_landmarks", "driver_images", "driver_landmarks",
        "driver_matrices", "target_matrices")}
    for index, frame in enumerate(read_frames(video)):
        if index >= len(found) or not found[index]:
            continue
        points = landmarks[index]
        target = align(frame, points, reference, size)
        driver = align(frame, points, reference, size, tracker(points))
        for key, value in (("frames", index), ("target_images", target.image),
                           ("target_landmarks", target.landmarks), ("driver_images", driver.image),
                           ("driver_landmarks", driver.landmarks), ("driver_matrices", driver.matrix),
                           ("target_matrices", target.matrix)):
            arrays[key].append(np.asarray(value))
    return {k: np.stack(v) for k, v in arrays.items()}


def _stats_key(stats: LandmarkStats) -> str:
    digest = hashlib.sha256()
    for name in ("mean", "basis", "coef_mean", "coef_std"):
        digest.update(np.ascontiguousarray(getattr(stats, name), np.float64).tobytes())
    return digest.hexdigest()[:12]


def prepare(videos: list[Path], cache: Path, size: int, holdout: float = 0.2,
            stats: LandmarkStats | None = None, say: Callable[[str], None] = print) -> Dataset:
    """Landmarks, statistics (fitted on the training frames unless given) and crops."""
    if not 0.0 < holdout < 1.0:
        raise ExportError(f"holdout must be between 0 and 1, got {holdout}")
    detected = []
    for video in videos:
        try:
            key = f"{video.stem}-{sha256_file(video)[:16]}"  # hashed once: both caches use it
            landmarks, found = _landmarks(video, key, cache / "landmarks", say)
        except RuntimeStageError as err:
            raise ExportError(f"cannot prepare {video}: {err}",
                              hint="remove or re-encode the video") from err
        split = int(round(len(found) * (1.0 - holdout)))
        train, held = found[:split].sum(), found[split:].sum()
        if min(train, held) < MIN_FRAMES:
            raise ExportError(f"{video.name}: a face in {train} frames before the split and {held} "
                              f"after; training needs {MIN_FRAMES} on each side",
                              hint="use a longer clip that shows one face throughout")
        detected.append((video, key, landmarks, found, split))
    if stats is None:
        stats = fit_stats([lm[:split][f[:split]] for _, _, lm, f, split in detected])
    folder = cache / f"crops-{size}-{_stats_key(stats)}"
    clips = []
    for video, key, landmarks, found, split in detected:
        cached = folder / f"{key}.npz"
        if not cached.is_file():
            say(f"  cropping {video.name} at {size}x{size}")
            arrays = _crops(video, landmarks, found, stats, size)
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(cached) as temporary, open(temporary, "wb") as handle:
                np.savez(handle, **arrays)
        with np.load(cached) as data:
            clips.append(Clip(name=video.stem, split=split, **{k: data[k] for k in data.files}))
    with atomic_path(cache / "sources.json") as temporary:
        temporary.write_text(json.dumps(
            {"videos": [str(v) for v in videos], "holdout": holdout, "size": size}, indent=1))
    return Dataset(clips, stats, size)


def face_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
    """The convex hull of the landmarks (supplement A4's facial region), (size, size) float32."""
    mask = np.zeros((size, size), np.uint8)
    hull = cv2.convexHull(np.round(landmarks[:, :2] * 16).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1, cv2.LINE_8, 4)
    return mask.astype(np.float32)


@dataclass
class Batch:
    """Model inputs in [-1, 1], numpy float32, channels first."""

    driver: np.ndarray  # (B, 3, S, S) ground truth x
    driver_landmarks: np.ndarray  # (B, 3, S, S) r_x
    targets: np.ndarray  # (B, K, 3, S, S) y_i
    target_landmarks: np.ndarray  # (B, K, 3, S, S) r_y_i
    mask: np.ndarray  # (B, 1, S, S) face region of x
    identity: np.ndarray  # (B,) clip index


def make_batch(dataset: Dataset, picks: list[tuple[int, int, list[int]]]) -> Batch:
    """picks: (clip index, driver frame, target frames) per sample (indices into the clip)."""
    s = dataset.size
    rows = []
    for c, d, ts in picks:
        clip = dataset.clips[c]
        rows.append((
            to_model_input(clip.driver_images[d]),
            to_model_input(rasterize(clip.driver_landmarks[d], s)),
            np.stack([to_model_input(clip.target_images[t]) for t in ts]),
            np.stack([to_model_input(rasterize(clip.target_landmarks[t], s)) for t in ts]),
            face_mask(clip.driver_landmarks[d], s)[None],
        ))
    return Batch(*(np.stack(column) for column in zip(*rows, strict=True)),
                 identity=np.array([c for c, _, _ in picks], np.int64))


def training_picks(dataset: Dataset, rng: np.random.Generator, batch: int, k: int
                   ) -> list[tuple[int, int, list[int]]]:
    """Self-reenactment pairs: a clip (uniformly: one identity as likely as another), a
    driver frame and K other target frames, all from the clip's training part."""
    picks = []
    for _ in range(batch):
        c = int(rng.integers(len(dataset.clips)))
        train = dataset.clips[c].train
        d = int(rng.choice(train))
        others = train[train != d]
        picks.append((c, d, [int(t) for t in rng.choice(others, size=k, replace=len(others) < k)]))
    return picks


def sample_training(dataset: Dataset, rng: np.random.Generator, batch: int, k: int) -> Batch:
    return make_batch(dataset, training_picks(dataset, rng, batch, k))
