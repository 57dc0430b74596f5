"""Shared test inputs: real faces (shipped with scikit-image, plus ../shared/data when it
is beside the checkout) and landmark sets placed in the model's crop."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def console_script(name: str) -> str:
    """The path of one of mnt's console scripts in the running environment."""
    return str(Path(sys.executable).parent / name)


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data; skips the test when the folder is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (../shared/data lies beside the checkout in CI)")
    return path


def square_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return cv2.resize(image[top:top + side, left:left + side], (size, size),
                      interpolation=cv2.INTER_AREA)


def real_faces(size: int = 256) -> list[np.ndarray]:
    """uint8 RGB portraits: the astronaut (scikit-image), then ../shared/data/targets."""
    from skimage import data

    faces = [square_crop(data.astronaut()[:320, 80:400], size)]
    if SHARED_DATA.exists():
        for path in sorted((SHARED_DATA / "targets").glob("*.jpg")):
            faces.append(square_crop(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), size))
    return faces


def placed_landmarks(size: int = 256, alpha: np.ndarray | None = None, seed: int = 0,
                     yaw: float = 0.0) -> np.ndarray:
    """The prior's mean face (plus an expression) posed in a size x size crop."""
    from mnt.export.model.landmark_prior import random_stats
    from mnt.runtime.landmarks import Pose, denormalize

    stats = random_stats(np.random.default_rng(seed))
    shape = stats.mean + (stats.expression(alpha) if alpha is not None else 0.0)
    c, s = np.cos(yaw), np.sin(yaw)
    rotation = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    pose = Pose(rotation=rotation, scale=0.32 * size, translation=np.array([size / 2, size * 0.55, 0]))
    return denormalize(shape, pose)
