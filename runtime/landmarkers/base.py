"""What every landmark backend shares: the detected `Face`, the `LandmarkBackend`
interface, and the input checks.

Coordinates are the image's pixels: x right, y down, z depth (away from the camera) in the
same pixel scale. The point order is iBUG's (see ``mnt.runtime.landmarks``): 0-16 jaw,
17-21 right brow, 22-26 left brow, 27-35 nose, 36-41 right eye, 42-47 left eye, 48-59 outer
lips, 60-67 inner lips ("right" is the subject's, on the image's left in a photo).
"""

from __future__ import annotations

import abc
import importlib
import os
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.landmarks import N_POINTS

FACES_HINT = "pip install 'mnt[faces]'"

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Face:
    """One detected face.

    landmarks: (68, 3) float64, iBUG order, image pixels (x right, y down, z depth; read-only).
    box: (x0, y0, x1, y1) in pixels, the extent of the whole face mesh (forehead included);
        it may reach outside the image when the face does.
    score: the human-face check's score (dlib HOG detector confidence, higher is surer;
        accepted from ``HUMAN_SCORE_THRESHOLD``), or None when the check was not run.
    count: how many faces the image held (this one is the largest).
    """

    landmarks: np.ndarray
    box: Box
    score: float | None
    count: int = 1

    def __post_init__(self) -> None:
        points = np.array(self.landmarks, dtype=np.float64)  # a private copy
        if points.shape != (N_POINTS, 3):
            raise RuntimeStageError(f"Face: expected landmarks of shape (68, 3), got {points.shape}")
        if not np.all(np.isfinite(points)):
            raise RuntimeStageError("Face: landmarks contain NaN or infinity")
        if self.count < 1:
            raise RuntimeStageError(f"Face: count must be at least 1, got {self.count}")
        points.flags.writeable = False
        object.__setattr__(self, "landmarks", points)
        object.__setattr__(self, "box", tuple(float(v) for v in self.box))


class LandmarkBackend(abc.ABC):
    """Finds the main face of an image and its 68 3D landmarks."""

    @abc.abstractmethod
    def detect(self, image: np.ndarray, *, human_check: bool | None = None) -> Face | None:
        """The largest face of a uint8 (H, W, 3) RGB image, or None when it holds none.
        `human_check`: whether to run a separate is-it-human check now (a tracker asks for
        it when it acquires a face); backends whose detector only finds humans ignore it."""

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op unless a backend holds resources
        """Release the backend's resources; it cannot be used afterwards."""

    def __enter__(self) -> LandmarkBackend:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """The image as a C-contiguous uint8 (H, W, 3) array, or a RuntimeStageError."""
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise RuntimeStageError(f"{what}: expected a uint8 RGB image of shape (H, W, 3), "
                                f"got {array.dtype} {array.shape}")
    if array.shape[0] < 2 or array.shape[1] < 2:
        raise RuntimeStageError(f"{what}: image of shape {array.shape} is too small")
    return np.ascontiguousarray(array)


def import_optional(name: str, hint: str = FACES_HINT) -> Any:
    # mediapipe's C++ side logs through glog/absl at start-up; keep the user's terminal clean.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        return importlib.import_module(name)
    except ImportError as err:
        first = (str(err).splitlines() or [""])[0]
        raise RuntimeStageError(f"face landmarks need {name}, which cannot be imported: {first}",
                                hint=hint) from err
    except TypeError as err:  # protobuf >= 5 under mediapipe 0.10.21: "Descriptors cannot be created"
        first = (str(err).splitlines() or [""])[0]
        raise RuntimeStageError(f"{name} failed to import (protobuf too new for it?): {first}",
                                hint=hint) from err
