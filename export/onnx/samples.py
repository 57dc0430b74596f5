"""Parity inputs made from real faces through the real rasteriser.

Face images come from driver videos or photos (tests use ../shared/data) or, by default,
from the astronaut photo that ships inside scikit-image. Landmarks are the checkpoint's
mean face posed in the crop with random expressions and head turns, rasterised by
mnt.runtime; real detected landmarks arrive with the runtime's face tracker.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from mnt.export.errors import ExportError
from mnt.export.model.checkpoint import Reference
from mnt.runtime import Pose, denormalize, normalize, rasterize, to_model_input
from mnt.runtime.align import CENTRE, RADIUS
from mnt.runtime.images import IMAGE_SUFFIXES, read_image
from mnt.runtime.landmarks import N_EXPRESSION, LandmarkStats
from mnt.runtime.video import read_frames

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm"}


def square_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return cv2.resize(image[top:top + side, left:left + side], (size, size),
                      interpolation=cv2.INTER_AREA)


def default_faces(size: int, count: int = 8) -> list[np.ndarray]:
    """The astronaut photo (scikit-image), varied by small shifts, scales and flips."""
    try:
        from skimage import data
    except ImportError as err:
        raise ExportError("scikit-image is needed for the default parity faces",
                          hint="pip install 'mnt[export]', or pass --faces DIR") from err
    photo = data.astronaut()[:320, 80:400]
    faces = []
    for i in range(count):
        shift, zoom = 6 * (i % 3) - 6, 1.0 + 0.04 * (i // 3)
        m = cv2.getRotationMatrix2D((160, 150), 2.0 * (i - count / 2), zoom)
        m[0, 2] += shift
        face = cv2.warpAffine(photo, m, (320, 320), borderMode=cv2.BORDER_REFLECT)
        faces.append(square_crop(face[:, ::-1] if i % 2 else face, size))
    return faces


def _human_face_check() -> tuple[Callable[[np.ndarray], bool], Callable[[], None]] | None:
    """(is there a human face in this RGB image, close), with the runtime's check
    (mediapipe's face mesh confirmed by dlib); None where those are not installed."""
    from mnt.runtime.errors import RuntimeStageError
    from mnt.runtime.landmarkers.mediapipe_mesh import MediaPipeLandmarks

    try:
        landmarker = MediaPipeLandmarks(static_image_mode=True)
    except RuntimeStageError as err:  # an optional extra: photos go unchecked, as before
        logging.getLogger(__name__).info("--faces photos not checked for a human face: %s",
                                         err.one_line())
        return None
    return (lambda image: landmarker.detect(image) is not None), landmarker.close


def faces_from(paths: Sequence[str | os.PathLike[str]], size: int, count: int = 8) -> list[np.ndarray]:
    """Up to `count` faces: photos as they are, videos sampled evenly (6 frames each). A
    photo without a human face (by the runtime's check, where mediapipe is installed) is
    refused: repeated to fill the 8 inputs, it would gate the model on a dog."""
    faces: list[np.ndarray] = []
    files = sorted(p for path in map(Path, paths)
                   for p in ([path] if path.is_file() else path.iterdir())
                   if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
    check: tuple[Callable[[np.ndarray], bool], Callable[[], None]] | None = None
    checked = False  # the landmarker starts at the first image: unused, it is never loaded

    def human(image: np.ndarray) -> bool:
        nonlocal check, checked
        if not checked:
            check, checked = _human_face_check(), True
        return check is None or check[0](image)

    try:
        for file in files:
            if file.suffix.lower() in IMAGE_SUFFIXES:
                image = read_image(file)
                if image is None:
                    continue
                if not human(image):
                    raise ExportError(f"{file}: no human face found",
                                      hint="--faces takes photos or videos of real people's faces")
                faces.append(square_crop(image, size))
            else:  # a video's faceless frames are skipped; a video without any is refused
                frames = list(read_frames(file, limit=6, step=15))
                kept = [f for f in frames if human(f)]
                if frames and not kept:
                    raise ExportError(f"{file}: no human face found in its sampled frames",
                                      hint="--faces takes photos or videos of real people's faces")
                faces.extend(square_crop(f, size) for f in kept)
    finally:
        if check is not None:
            check[1]()
    if not faces:
        raise ExportError(f"no readable photos or videos in {', '.join(map(str, paths))}")
    step = max(1, len(faces) // count)
    return (faces[::step] * count)[:count]


def posed_landmarks(stats: LandmarkStats, size: int, alpha: np.ndarray | None = None,
                    yaw: float = 0.0) -> np.ndarray:
    """The mean face with expression coefficients `alpha`, turned by `yaw`, in the crop."""
    shape = stats.mean + (stats.expression(alpha) if alpha is not None else 0.0)
    c, s = np.cos(yaw), np.sin(yaw)
    rotation = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    centre = np.array([CENTRE[0] * size, CENTRE[1] * size, 0.0])
    return denormalize(shape, Pose(rotation, RADIUS * size, centre))


def component_inputs(reference: Reference, faces: list[np.ndarray], k: int,
                     seed: int = 0) -> dict[str, tuple[np.ndarray, ...]]:
    """Inputs of every component for K targets, in the components' input order: float64
    arrays holding float32-exact values, so goldens can store them as float32."""
    size, stats = reference.config.image_size, reference.stats
    rng = np.random.default_rng(seed + k)
    images = np.stack([to_model_input(faces[i % len(faces)]) for i in range(k)]).astype(np.float64)
    points = [posed_landmarks(stats, size, rng.standard_normal(N_EXPRESSION), rng.uniform(-0.3, 0.3))
              for _ in range(k)]
    drawn = np.stack([to_model_input(rasterize(p, size)) for p in points]).astype(np.float64)
    offsets = np.stack([(normalize(p, stats.mean)[0] - stats.mean).reshape(-1) for p in points])
    offsets = offsets.astype(np.float32).astype(np.float64)  # exact in float32, like all inputs
    driver = to_model_input(rasterize(posed_landmarks(
        stats, size, 2.0 * rng.standard_normal(N_EXPRESSION), rng.uniform(-0.4, 0.4)), size))
    with torch.no_grad():  # the frame phase's inputs: a real target state (float32 model)
        state = reference.generator.encode_targets(torch.from_numpy(images).float()[None],
                                                   torch.from_numpy(drawn).float()[None])
    per_target = [t.reshape(k, -1, t.shape[-1]).double().numpy() for t in (*state.keys, *state.values)]
    warped = [t.double().numpy() for t in state.warped]
    return {
        "target_encoder": (images, drawn),
        "landmark_disentangler": (images, offsets),
        "generator": (driver[None].astype(np.float64), *per_target, *warped),
    }
