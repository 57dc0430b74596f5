"""Training data from talking-head videos, made by the runtime's own code: mediapipe
landmarks (`mnt.runtime.landmarkers.mediapipe_mesh`), target crops fitted per frame and driver crops that
follow the head as `mnt-run` makes them (`mnt.runtime.align`), the supplement's
rasterised landmarks. Two layouts: one folder of clips, one person each, or VoxCeleb's
identity folders (holding video folders holding clips, or clips directly), whose training
pairs may mix clips of one identity. The last `holdout` of every clip is held back for
evaluation.

Cached on disk in two steps, one file per clip, written as each finishes (so a stopped
preparation resumes): landmarks (the slow part, keyed by the video's sha256), then crops
at one size and one set of landmark statistics. Both steps run in worker processes. The
crops' images stay on disk, read as batches need them (`ondisk.Rows`).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from mnt.export.errors import ExportError
from mnt.export.train.ondisk import Rows, open_npz
from mnt.export.train.stats import coefficients, fit_stats, identity
from mnt.runtime.align import CropTracker, align, template
from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.files import atomic_path, sha256_file
from mnt.runtime.landmarks import LandmarkStats
from mnt.runtime.rasterize import rasterize, to_model_input
from mnt.runtime.video import read_frames

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm"}
MIN_FRAMES = 8  # a clip needs this many frames with a face on each side of the split
IMAGES = {"target_images", "driver_images"}  # left on disk (Rows); the rest is small


@dataclass(frozen=True)
class Video:
    path: Path
    identity: str  # the person: the clip's own name in a flat folder
    name: str  # unique within the folder: identity/video/clip in VoxCeleb's layout


@dataclass
class Clip:
    """One video's usable frames (those with a face), in both crops (the images read from
    the cache file as they are used)."""

    name: str
    identity: str
    frames: np.ndarray  # (T,) frame indices in the video
    split: int  # frames[i] < split are for training, the rest held back
    target_images: np.ndarray | Rows  # (T, S, S, 3) uint8: per-frame fitted crops, as targets get
    target_landmarks: np.ndarray  # (T, 68, 3) in target-crop pixels
    driver_images: np.ndarray | Rows  # (T, S, S, 3) uint8: crops that follow the head, as drivers get
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
    identities: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.identities = sorted({c.identity for c in self.clips})

    def identity_index(self, clip: int) -> int:
        return self.identities.index(self.clips[clip].identity)

    @cached_property
    def training_frames(self) -> list[np.ndarray]:
        """Per identity, (N, 2) (clip index, frame index) of all its clips' training frames."""
        rows: dict[str, list[np.ndarray]] = {i: [] for i in self.identities}
        for c, clip in enumerate(self.clips):
            train = clip.train
            rows[clip.identity].append(np.stack([np.full(len(train), c), train], axis=1))
        return [np.concatenate(rows[i]) for i in self.identities]

    def coefficients(self, clip: Clip) -> np.ndarray:
        """Normalised expression coefficients of every frame of `clip` (its identity from
        its training frames): the disentangler's targets."""
        ident = identity(self.stats, clip.target_landmarks[clip.train])
        return coefficients(self.stats, clip.target_landmarks, ident)


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES and path.is_file()


def find_videos(folder: Path) -> list[Video]:
    """Clips directly in `folder` (one person each), or else VoxCeleb's layout: every
    subfolder is an identity, its clips in video folders below it or directly in it."""
    if not folder.is_dir():
        raise ExportError(f"videos folder {folder} does not exist",
                          hint="give a folder of talking-head clips, one person per clip, or "
                               "identity folders holding video folders holding clips (VoxCeleb)")
    flat = sorted(p for p in folder.iterdir() if _is_video(p))
    if flat:
        videos = [Video(p, p.stem, p.stem) for p in flat]
    else:
        videos = [Video(p, person.name, p.relative_to(folder).with_suffix("").as_posix())
                  for person in sorted(d for d in folder.iterdir() if d.is_dir())
                  for p in sorted(person.rglob("*")) if _is_video(p)]
    if len(videos) < 2 or len({v.identity for v in videos}) < 2:
        raise ExportError(f"{folder} holds {len(videos)} video(s) of {len({v.identity for v in videos})} "
                          f"people; training needs at least 2 people "
                          f"({', '.join(sorted(VIDEO_SUFFIXES))})",
                          hint="give clips directly in the folder, or identity folders of clips")
    return videos


def _video_key(video: Path) -> str:
    return f"{video.stem}-{sha256_file(video)[:16]}"  # hashed once: both caches use it


def _find_landmarks(video: Path, cache: Path) -> tuple[str, bool]:
    """Worker: (T, 68, 3) landmarks in frame pixels and (T,) whether a face was found,
    into cache/KEY.npz. -> (KEY, whether it had to be computed)."""
    from mnt.runtime.landmarkers.mediapipe_mesh import MediaPipeLandmarks

    key = _video_key(video)
    cached = cache / f"{key}.npz"
    if cached.is_file():
        return key, False
    points, found = [], []
    with MediaPipeLandmarks(static_image_mode=False) as faces:
        for frame in read_frames(video):
            # The slow human-face check only while no face is tracked, as mnt-run does.
            face = faces.detect(frame, human_check=not found or not found[-1])
            found.append(face is not None)
            points.append(face.landmarks if face is not None else np.full((68, 3), np.nan))
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_path(cached) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, landmarks=np.asarray(points, np.float64), found=np.asarray(found, bool))
    return key, True


def _crop(video: Path, landmarks_file: Path, stats: LandmarkStats, size: int, cached: Path
          ) -> tuple[Path, bool]:
    """Worker: both crops of every frame with a face into `cached`; -> (it, whether computed)."""
    if cached.is_file():
        return cached, False
    with np.load(landmarks_file) as data:
        landmarks, found = data["landmarks"], data["found"]
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
    cached.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cached) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, **{k: np.stack(v) for k, v in arrays.items()})
    return cached, True


def _in_workers(what: str, job: Callable, calls: list[tuple], names: list[str], workers: int,
                say: Callable[[str], None]) -> list:
    """job(*call) -> (result, whether it had work to do) for every call (its first argument
    the video), in `workers` processes (spawned: mediapipe's and torch's threads do not
    survive a fork), with a progress line per clip that had work. -> results in order."""
    results: list = [None] * len(calls)
    started, done = time.perf_counter(), 0

    def finish(index: int, run: Callable[[], tuple]) -> None:
        nonlocal done
        try:
            results[index], worked = run()
        except RuntimeStageError as err:
            raise ExportError(f"cannot prepare {calls[index][0]}: {err}",
                              hint="remove or re-encode the video") from err
        done += 1
        if worked:
            say(f"  {what} {done}/{len(calls)}: {names[index]} ({time.perf_counter() - started:.0f} s)")

    if workers <= 1 or len(calls) <= 1:
        for index, call in enumerate(calls):
            finish(index, lambda call=call: job(*call))
        return results
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(calls)), mp_context=spawn) as pool:
        futures = {pool.submit(job, *call): index for index, call in enumerate(calls)}
        for future in as_completed(futures):
            finish(futures[future], future.result)
    return results


def _stats_key(stats: LandmarkStats) -> str:
    digest = hashlib.sha256()
    for name in ("mean", "basis", "coef_mean", "coef_std"):
        digest.update(np.ascontiguousarray(getattr(stats, name), np.float64).tobytes())
    return digest.hexdigest()[:12]


def prepare(videos: list[Video], cache: Path, size: int, holdout: float = 0.2,
            stats: LandmarkStats | None = None, say: Callable[[str], None] = print,
            workers: int = 1) -> Dataset:
    """Landmarks, statistics (fitted on the training frames unless given) and crops."""
    if not 0.0 < holdout < 1.0:
        raise ExportError(f"holdout must be between 0 and 1, got {holdout}")
    names = [v.name for v in videos]
    found_in = cache / "landmarks"
    keys = _in_workers("finding faces", _find_landmarks, [(v.path, found_in) for v in videos], names,
                       workers, say)
    detected = []
    for video, key in zip(videos, keys, strict=True):
        with np.load(found_in / f"{key}.npz") as data:
            landmarks, found = data["landmarks"], data["found"]
        split = int(round(len(found) * (1.0 - holdout)))
        train, held = found[:split].sum(), found[split:].sum()
        if min(train, held) < MIN_FRAMES:
            raise ExportError(f"{video.path.name}: a face in {train} frames before the split and {held} "
                              f"after; training needs {MIN_FRAMES} on each side",
                              hint="use a longer clip that shows one face throughout")
        detected.append((landmarks, found, split))
    if stats is None:
        stats = fit_stats([lm[:split][f[:split]] for lm, f, split in detected])
    folder = cache / f"crops-{size}-{_stats_key(stats)}"
    _in_workers(f"cropping at {size}x{size}", _crop,
                [(v.path, found_in / f"{key}.npz", stats, size, folder / f"{key}.npz")
                 for v, key in zip(videos, keys, strict=True)], names, workers, say)
    clips = []
    for video, key, (_, _, split) in zip(videos, keys, detected, strict=True):
        clips.append(Clip(name=video.name, identity=video.identity, split=split,
                          **open_npz(folder / f"{key}.npz", IMAGES)))
    with atomic_path(cache / "sources.json") as temporary:
        temporary.write_text(json.dumps(
            {"videos": [str(v.path) for v in videos], "holdout": holdout, "size": size}, indent=1))
    return Dataset(clips, stats, size)


def _mirror_order() -> np.ndarray:
    """Each of the 68 points' counterpart in the mirrored face (the iBUG layout): jaw,
    eyebrows, nostrils, eyes and lips swap sides; the bridge and the midline stay."""
    pairs = [(i, 16 - i) for i in range(17)] + [(17 + i, 26 - i) for i in range(5)]
    pairs += [(27 + i, 27 + i) for i in range(4)] + [(31 + i, 35 - i) for i in range(5)]
    pairs += list(zip((36, 37, 38, 39, 40, 41), (45, 44, 43, 42, 47, 46), strict=True))
    pairs += [(48 + i, 54 - i) for i in range(7)] + [(55 + i, 59 - i) for i in range(5)]
    pairs += [(60 + i, 64 - i) for i in range(5)] + [(65, 67), (66, 66)]
    order = np.arange(68)
    for a, b in pairs:
        order[a], order[b] = b, a
    return order


MIRROR = _mirror_order()


def mirror(landmarks: np.ndarray, size: int) -> np.ndarray:
    """The landmarks of the horizontally flipped crop: x reflected about the crop's centre
    (pixel centres at integers, as the rasteriser draws them) and left and right points
    swapped, so each group stays the same side of the face it names."""
    flipped = np.array(landmarks, np.float64)[MIRROR]
    flipped[:, 0] = (size - 1) - flipped[:, 0]
    return flipped


# dlib's chip against the 68 points' box, measured on 17 real faces: 1.0-1.34 times its
# side (mean 1.2), centred 3.5-12 % of it higher (mean 7 %).
CHIP_SCALE, CHIP_RAISE = 1.2, 0.07


def face_box(landmarks: np.ndarray) -> np.ndarray:
    """(centre x, centre y, side) in pixels of a square like dlib's 150 px face chip
    (`get_face_chip(image, shape, 150, 0.25)`), from the 68 points, upright."""
    lo, hi = landmarks[:, :2].min(axis=0), landmarks[:, :2].max(axis=0)
    side = float(max(hi - lo))
    centre = (lo + hi) / 2
    return np.array([centre[0], centre[1] - CHIP_RAISE * side, CHIP_SCALE * side], np.float32)


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
    face_box: np.ndarray  # (B, 3) x's face chip: centre x, centre y, side in pixels
    identity: np.ndarray  # (B,) clip index


Frame = tuple[int, int]  # (clip index, frame index in the clip)
Pick = tuple[Frame, list[Frame]]  # a driver frame and K target frames


def make_batch(dataset: Dataset, picks: list[Pick], flips: np.ndarray | None = None) -> Batch:
    """`flips[i]`: sample i mirrored whole (driver, targets, their landmarks and mask)."""
    s = dataset.size
    rows = []
    for i, ((c, d), targets) in enumerate(picks):
        flip = bool(flips[i]) if flips is not None else False

        def view(image: np.ndarray, points: np.ndarray, flip: bool = flip) -> tuple[np.ndarray, np.ndarray]:
            return (np.ascontiguousarray(image[:, ::-1]), mirror(points, s)) if flip else (image, points)

        driver, points = view(dataset.clips[c].driver_images[d], dataset.clips[c].driver_landmarks[d])
        views = [view(dataset.clips[tc].target_images[t], dataset.clips[tc].target_landmarks[t])
                 for tc, t in targets]
        rows.append((
            to_model_input(driver),
            to_model_input(rasterize(points, s)),
            np.stack([to_model_input(image) for image, _ in views]),
            np.stack([to_model_input(rasterize(p, s)) for _, p in views]),
            face_mask(points, s)[None],
            face_box(points),
        ))
    return Batch(*(np.stack(column) for column in zip(*rows, strict=True)),
                 identity=np.array([dataset.identity_index(c) for (c, _), _ in picks], np.int64))


def same_clip(clip: int, driver: int, targets: list[int]) -> Pick:
    return (clip, driver), [(clip, t) for t in targets]


def training_picks(dataset: Dataset, rng: np.random.Generator, batch: int, k: int) -> list[Pick]:
    """Self-reenactment pairs: an identity (uniformly: one person as likely as another), a
    driver frame and K other target frames from the training parts of its clips (in
    VoxCeleb's layout, targets may come from other clips of the same person)."""
    picks = []
    for _ in range(batch):
        frames = dataset.training_frames[int(rng.integers(len(dataset.identities)))]
        d = int(rng.integers(len(frames)))
        others = np.delete(frames, d, axis=0)
        chosen = others[rng.choice(len(others), size=k, replace=len(others) < k)]
        picks.append(((int(frames[d, 0]), int(frames[d, 1])), [(int(c), int(t)) for c, t in chosen]))
    return picks
