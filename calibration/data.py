"""Calibration data: real media in, the real inputs of every component out.

A folder (searched recursively) of driver videos and target photos goes through the
runtime's own preprocessing: target photos are found, checked human and aligned as
`mnt-run` does (mediapipe landmarks, dlib check, the shared crop), driver frames are tracked
by `DriverStream` (face mesh tracking, One-Euro, crop refit, landmark transformer). The
component inputs are recorded where the FP32 `Reenactor` hands them to its backends, so they
are exactly what the runtime feeds: nothing here re-implements a preprocessing step.

The frame sample is fixed and reproducible: per video, evenly spaced frames (the tracker
sees every `step`-th frame, at the matching frame rate); the frames with a face are then
split by a seeded permutation into the calibration sample and the held-back frames that
the accuracy report uses. The sample's description (files, frame indices, hash) goes into
the manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mnt.export.onnx.goldens import GOLDEN_K  # one such target set: the goldens come from real faces too
from mnt.runtime.align import align, template
from mnt.runtime.backends.base import Backend, resolve_shape
from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.images import IMAGE_SUFFIXES, read_image
from mnt.runtime.pipeline import DriverStream, Targets
from mnt.runtime.reenactor import Reenactor

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm"}


class CalibrationError(RuntimeStageError):
    """Bad calibration media (a RuntimeStageError: its own stage, caught by the CLI guard)."""


@dataclass(frozen=True)
class Options:
    frames: int = 32  # calibration sample: driver frames with a face
    held_back: int = 8  # frames kept out of the sample, for the accuracy report
    seed: int = 0
    # calibration frames each trial of the per-block search (and the end-to-end rule) is
    # judged on: more is surer, each costs one run per trial
    search_frames: int = 6

    def __post_init__(self) -> None:
        if self.frames < 1 or self.held_back < 1 or self.search_frames < 1:
            raise CalibrationError(f"need at least 1 calibration, 1 held-back and 1 search frame, got "
                                   f"{self.frames}, {self.held_back} and {self.search_frames}")


@dataclass(frozen=True)
class TargetFace:
    file: str  # relative to the calibration folder
    image: np.ndarray  # aligned crop, uint8
    landmarks: np.ndarray  # (68, 3) crop pixels


@dataclass(frozen=True)
class DriverFrame:
    video: str
    index: int  # frame index in the video (0-based, decoding order)
    target_set: int
    image: np.ndarray  # the driver's aligned crop, uint8
    landmarks: np.ndarray  # the crop's (smoothed) landmarks, before the landmark transformer


Feeds = dict[str, np.ndarray]


@dataclass
class CalibrationData:
    folder: Path
    target_sets: list[list[TargetFace]]
    calibration: list[DriverFrame]
    held_back: list[DriverFrame]
    skipped: list[str] = field(default_factory=list)
    feeds: dict[str, list[Feeds]] = field(default_factory=dict)  # component -> calibration inputs
    held_back_feeds: dict[str, list[Feeds]] = field(default_factory=dict)

    def sample(self) -> dict:
        """The manifest's record of the sample: files, frame indices and their hash."""
        frames = [{"video": f.video, "frame": f.index, "target_set": f.target_set}
                  for f in self.calibration]
        held = [{"video": f.video, "frame": f.index, "target_set": f.target_set} for f in self.held_back]
        sets = [[t.file for t in s] for s in self.target_sets]
        digest = hashlib.sha256(json.dumps([sets, frames, held], sort_keys=True).encode())
        for face in (t for s in self.target_sets for t in s):
            digest.update(face.image.tobytes())
        for frame in (*self.calibration, *self.held_back):
            digest.update(frame.image.tobytes())
        return {"folder": str(self.folder), "target_sets": sets, "frames": frames,
                "held_back": held, "skipped": self.skipped, "sha256": digest.hexdigest()}


class Recorder(Backend):
    """Stands in for one backend of a Reenactor and keeps a copy of every feed it is given.
    `run=False` answers with zeros instead of running (the generator's output is not needed
    to calibrate, only its inputs)."""

    def __init__(self, inner: Backend, run: bool = True) -> None:
        super().__init__(inner.component)
        self.inner, self.run = inner, run
        self.is_active = inner.is_active  # it stands in for a backend already in use
        self.feeds: list[Feeds] = []

    def activate_impl(self) -> None:
        self.inner.activate()

    def deactivate_impl(self) -> None:
        self.inner.deactivate()

    def infer_impl(self, ready: dict[str, np.ndarray], dims: dict[str, int]) -> dict[str, np.ndarray]:
        self.feeds.append({name: array.copy() for name, array in ready.items()})
        if self.run:
            return self.inner.infer(ready)
        return {t.name: np.zeros(resolve_shape(t.shape, dims), dtype=t.dtype)
                for t in self.component.outputs}


def media_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(photos, videos) under `folder`, recursively, in sorted order (hidden files skipped)."""
    if not folder.is_dir():
        raise CalibrationError(f"calibration folder {folder} does not exist",
                               hint="give a folder of driver videos and target photos")
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    photos = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
    return photos, videos


def _target_faces(folder: Path, photos: list[Path], model: Reenactor, skipped: list[str],
                  say: Callable[[str], None]) -> list[TargetFace]:
    from mnt.runtime.landmarkers.mediapipe_mesh import MediaPipeLandmarks

    reference = template(model.stats, model.size)
    faces = []
    with MediaPipeLandmarks(static_image_mode=True) as detector:
        for path in photos:
            name = str(path.relative_to(folder))
            image = read_image(path)
            face = None if image is None else detector.detect(image)
            if face is None:
                why = "not a readable image" if image is None else "no human face found"
                skipped.append(f"{name}: {why}")
                say(f"calibration: skipping {name}: {why}")
                continue
            crop = align(image, face.landmarks, reference, model.size)
            faces.append(TargetFace(name, crop.image, crop.landmarks))
    return faces


def _target_sets(faces: list[TargetFace]) -> list[list[TargetFace]]:
    """Each face alone (K=1), and one set of GOLDEN_K (cycled when fewer faces exist)."""
    sets = [[f] for f in faces]
    sets.append([faces[i % len(faces)] for i in range(GOLDEN_K)])
    return sets


def _tracked_frames(folder: Path, video: Path, per_video: int, model: Reenactor, targets: Targets,
                    target_set: int, skipped: list[str], say: Callable[[str], None]
                    ) -> list[DriverFrame]:
    """`per_video` evenly spaced frames of one video, through DriverStream; [] when unreadable."""
    from mnt.runtime.landmarkers.mediapipe_mesh import MediaPipeLandmarks
    from mnt.runtime.video import read_frames, video_info

    name = str(video.relative_to(folder))
    try:
        rate, count, _ = video_info(video)
        step = max(1, count // per_video) if count else 1
        frames = []
        tracker = MediaPipeLandmarks(static_image_mode=False)
        try:
            stream = DriverStream(model, targets, tracker, float(rate) / step)
            for i, frame in enumerate(read_frames(video, limit=per_video, step=step)):
                without_face = stream.timings.frames_without_face
                produced = stream(frame)
                # only frames with a face of their own (not ones holding the last landmarks)
                if produced is not None and stream.timings.frames_without_face == without_face:
                    crop = produced[1]
                    frames.append(DriverFrame(name, i * step, target_set, crop.image, crop.landmarks))
        finally:
            tracker.close()
    except RuntimeStageError as err:
        skipped.append(f"{name}: {err}")
        say(f"calibration: skipping {name}: it cannot be read ({err})")
        return []
    if not frames:
        skipped.append(f"{name}: no human face in the sampled frames")
        say(f"calibration: skipping {name}: no human face in the sampled frames")
    return frames


def collect(folder: Path, model: Reenactor, options: Options,
            say: Callable[[str], None] = print) -> CalibrationData:
    """Find faces in `folder`, sample driver frames, and record every component's inputs
    through `model` (the FP32 build of the same checkpoint)."""
    folder = Path(folder)
    photos, videos = media_files(folder)
    skipped: list[str] = []
    wanted = options.frames + options.held_back
    faces = _target_faces(folder, photos, model, skipped, say)
    if not faces and videos:  # no usable photo: the first frame of each video serves as a target
        faces = _first_frames_as_targets(folder, videos, model, skipped)
    if not faces:
        raise CalibrationError(
            f"no usable human faces in {folder} ({len(photos)} photos, {len(videos)} videos)"
            + (": " + "; ".join(skipped) if skipped else ""),
            hint="calibrate with photos and videos that show one person's face, roughly frontal")
    if not videos:
        raise CalibrationError(
            f"no driver videos in {folder}: the calibration sample needs {wanted} video frames "
            f"with a face ({options.frames} to calibrate, {options.held_back} held back)",
            hint="add talking-head videos (.mp4, .mov, .mkv, .avi, .webm) to the folder")
    sets = _target_sets(faces)
    states = [model.encode_targets([t.image for t in s], [t.landmarks for t in s])[0] for s in sets]
    # Oversample: some sampled frames may have no face, some videos may be unreadable.
    per_video = math.ceil(1.5 * wanted / len(videos)) + 2
    tracked: list[DriverFrame] = []
    for i, video in enumerate(videos):
        target_set = i % len(sets)
        targets = Targets([], [], sets[target_set][0].image, states[target_set], False)
        with recording(model):  # tracking needs no generated frame
            tracked += _tracked_frames(folder, video, per_video, model, targets, target_set, skipped, say)
    if len(tracked) < wanted:
        raise CalibrationError(
            f"only {len(tracked)} usable frames with a face in {folder}; the calibration sample needs "
            f"{wanted} ({options.frames} to calibrate, {options.held_back} held back)",
            hint="add driver videos, or ask for fewer frames (--calibration-frames, --held-back-frames)")
    order = np.random.default_rng(options.seed).permutation(len(tracked))
    chosen = sorted(order[:options.frames].tolist())
    held = sorted(order[options.frames:wanted].tolist())
    # Target sets go round the frames; the first held-back frame takes the K=GOLDEN_K set,
    # so the goldens and the K=3 gate come from real faces.
    n = len(sets)
    data = CalibrationData(folder, sets,
                           [replace(tracked[i], target_set=j % n) for j, i in enumerate(chosen)],
                           [replace(tracked[i], target_set=(n - 1 + j) % n) for j, i in enumerate(held)],
                           skipped)
    data.feeds = record_feeds(model, data, data.calibration)
    data.held_back_feeds = record_feeds(model, data, data.held_back)
    return data


def _first_frames_as_targets(folder: Path, videos: list[Path], model: Reenactor,
                             skipped: list[str]) -> list[TargetFace]:
    from mnt.runtime.landmarkers.mediapipe_mesh import MediaPipeLandmarks
    from mnt.runtime.video import read_frames

    reference = template(model.stats, model.size)
    faces = []
    with MediaPipeLandmarks(static_image_mode=True) as detector:
        for video in videos:
            try:
                frame = next(iter(read_frames(video, limit=1)), None)
            except RuntimeStageError:
                continue  # reported when its frames are read
            face = None if frame is None else detector.detect(frame)
            if face is not None:
                crop = align(frame, face.landmarks, reference, model.size)
                faces.append(TargetFace(f"{video.relative_to(folder)}#0", crop.image, crop.landmarks))
    return faces


@contextlib.contextmanager
def recording(model: Reenactor) -> Iterator[dict[str, Recorder]]:
    """Record every backend call of `model`; the generator answers zeros (not run)."""
    saved = dict(model.backends)
    recorders = {name: Recorder(backend, run=name != "generator") for name, backend in saved.items()}
    model.backends.update(recorders)
    try:
        yield recorders
    finally:
        model.backends.update(saved)


def record_feeds(model: Reenactor, data: CalibrationData, frames: list[DriverFrame]
                 ) -> dict[str, list[Feeds]]:
    """Each component's inputs for `frames`, as the runtime gives them to its backends:
    the target encoder and the landmark disentangler on the frames' target sets and on the
    driver crops as single targets (real faces it would encode), the disentangler again and
    the generator per frame."""
    with recording(model) as recorders:
        states = {}
        for s in sorted({f.target_set for f in frames}):
            faces = data.target_sets[s]
            states[s] = model.encode_targets([t.image for t in faces], [t.landmarks for t in faces])[0]
        for frame in frames:
            model.encode_targets([frame.image], [frame.landmarks])  # the crop as a target photo
            state = states[frame.target_set]
            model.generate(state, model.driver_landmarks(state, frame.image, frame.landmarks))
    return {name: r.feeds for name, r in recorders.items()}


