"""The landmark rasteriser of supplement A1, shared by training, export checks and
the runtime so that landmark images are bit-identical everywhere.

68 3D points are projected orthographically onto the image plane (z dropped) and each
of the eight groups is drawn as a polyline in its fixed colour.
"""

from __future__ import annotations

import numpy as np

from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.landmarks import GROUPS, N_POINTS

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
YELLOW, CYAN = (255, 255, 0), (0, 255, 255)

# RGB colour of each group (paper: red, red, green, blue, yellow, yellow, cyan, cyan).
COLORS: dict[str, tuple[int, int, int]] = {
    "left_eye": RED,
    "right_eye": RED,
    "contour": GREEN,
    "nose": BLUE,
    "left_eyebrow": YELLOW,
    "right_eyebrow": YELLOW,
    "inner_mouth": CYAN,
    "outer_mouth": CYAN,
}

_SHIFT = 4  # sub-pixel bits: points are drawn at 1/16 pixel precision


def rasterize(landmarks: np.ndarray, size: int = 256) -> np.ndarray:
    """Draw (68, 3) landmarks in crop pixel coordinates as a (size, size, 3) uint8 RGB image."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (N_POINTS, 3) or not np.all(np.isfinite(points)):
        raise RuntimeStageError(f"rasterize: expected finite (68, 3) landmarks, got {points.shape}")
    # Clip far-away points so the fixed-point conversion cannot overflow int32.
    xy = np.clip(points[:, :2], -4 * size, 5 * size)
    fixed = np.round(xy * (1 << _SHIFT)).astype(np.int32)
    image = np.zeros((size, size, 3), np.uint8)
    thickness = max(1, size // 128)
    import cv2  # here, not above: `mnt.runtime` imports this module, and must import without
    # OpenCV where its non-headless wheel cannot load (Triton's images have no libGL)

    for name, (lines, closed) in GROUPS.items():
        polylines = [fixed[list(line)] for line in lines]
        cv2.polylines(image, polylines, closed, COLORS[name], thickness, cv2.LINE_AA, _SHIFT)
    return image


def to_model_input(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB -> float32 (3, H, W) in [-1, 1], the models' input layout."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise RuntimeStageError(f"expected a uint8 (H, W, 3) RGB image, got {image.dtype} {image.shape}")
    return (image.transpose(2, 0, 1).astype(np.float32) / 127.5) - 1.0
