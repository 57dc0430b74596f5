"""Face crops: the same similarity transform for targets and drivers, so that a face sits
in the model's crop where the landmark statistics' mean face sits."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.landmarks import LandmarkStats, Pose, denormalize

# Where the mean face sits in a crop of side S: centred at (S/2, 0.55 S), RMS radius 0.27 S,
# which leaves hair, ears and some background around the face, as in VoxCeleb's crops.
CENTRE = (0.5, 0.55)
RADIUS = 0.27


def template(stats: LandmarkStats, size: int) -> np.ndarray:
    """The mean landmark posed frontally in a size x size crop, (68, 3) pixels."""
    pose = Pose(np.eye(3), RADIUS * size, np.array([CENTRE[0] * size, CENTRE[1] * size, 0.0]))
    return denormalize(stats.mean, pose)


@dataclass(frozen=True)
class Crop:
    """A face crop and how it maps back: crop = matrix @ [x, y, 1] of the image."""

    image: np.ndarray  # (size, size, 3) uint8 RGB
    landmarks: np.ndarray  # (68, 3) in crop pixels (z scaled like x and y)
    matrix: np.ndarray  # (2, 3) image -> crop

    def inverse(self) -> np.ndarray:
        return cv2.invertAffineTransform(self.matrix)


def fit(landmarks: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The similarity (rotation in the image plane, scale, translation) that best maps the
    landmarks' x, y onto `reference` (see `template`), as a (2, 3) matrix."""
    points = np.asarray(landmarks, np.float64)
    matrix, _ = cv2.estimateAffinePartial2D(points[:, :2].astype(np.float32),
                                            reference[:, :2].astype(np.float32), method=cv2.LMEDS)
    if matrix is None or not np.all(np.isfinite(matrix)):
        raise RuntimeStageError("cannot align the face: its landmarks are degenerate")
    return matrix


class CropTracker:
    """A driver's crop stays put while the face moves inside it, so the head's motion
    (translation, roll, scale) reaches the generator as the paper's fixed video crops do;
    it is refitted when the face drifts more than `refit` of the crop from its place or
    changes size by as much (cuts, zooms, walking off). Shared by the runtime's driver
    stream and the trainer's data, so that training sees the crops deployment makes."""

    def __init__(self, reference: np.ndarray, size: int, refit: float = 0.15) -> None:
        self.reference, self.size, self.refit = np.asarray(reference, np.float64), size, refit
        self.matrix: np.ndarray | None = None

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Landmarks (68, 2+) in image pixels -> the (2, 3) image-to-crop matrix."""
        if self.matrix is not None:
            xy = points[:, :2] @ self.matrix[:, :2].T + self.matrix[:, 2]
            reference = self.reference[:, :2]
            drift = np.abs(xy.mean(axis=0) - reference.mean(axis=0)).max() / self.size
            spread = np.sqrt(((xy - xy.mean(axis=0)) ** 2).sum(axis=1).mean())
            target = np.sqrt(((reference - reference.mean(axis=0)) ** 2).sum(axis=1).mean())
            if drift < self.refit and abs(spread / target - 1) < self.refit:
                return self.matrix
        self.matrix = fit(points, self.reference)
        return self.matrix


def align(image: np.ndarray, landmarks: np.ndarray, reference: np.ndarray, size: int,
          matrix: np.ndarray | None = None) -> Crop:
    """Crop `image` by `matrix`, or by the fit of the landmarks onto `reference`."""
    points = np.asarray(landmarks, np.float64)
    if matrix is None:
        matrix = fit(points, reference)
    crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    xy = points[:, :2] @ matrix[:, :2].T + matrix[:, 2]
    z = (points[:, 2:] - points[:, 2:].mean()) * scale
    return Crop(crop, np.concatenate([xy, z], axis=1), matrix)


def paste_back(image: np.ndarray, face: np.ndarray, crop: Crop, feather: float = 0.08) -> np.ndarray:
    """Blend a generated face (crop-sized) back into `image` at the crop's place, with an
    elliptical mask feathered over `feather` of the crop side."""
    size = face.shape[0]
    h, w = image.shape[:2]
    inverse = crop.inverse()
    warped = cv2.warpAffine(face, inverse, (w, h), flags=cv2.INTER_LINEAR)
    mask = np.zeros((size, size), np.float32)
    centre = (int(CENTRE[0] * size), int(CENTRE[1] * size) - size // 20)
    cv2.ellipse(mask, centre, (int(0.36 * size), int(0.44 * size)), 0, 0, 360, 1.0, -1)
    blur = max(1, int(feather * size)) | 1
    mask = cv2.GaussianBlur(mask, (blur, blur), 0)
    alpha = cv2.warpAffine(mask, inverse, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    return (alpha * warped + (1 - alpha) * image).astype(np.uint8)


def fit_within(image: np.ndarray, crop: Crop, longest: int) -> tuple[np.ndarray, Crop]:
    """`image` scaled down to at most `longest` pixels on its longer side, with `crop`'s
    matrix following it (paste-back's output size is the photo's)."""
    scale = longest / max(image.shape[:2])
    if scale >= 1:
        return image, crop
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA)
    scaled = crop.matrix @ np.diag([w / small.shape[1], h / small.shape[0], 1.0])
    return small, Crop(crop.image, crop.landmarks, scaled)
