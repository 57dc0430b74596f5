"""68-point 3D facial landmarks (iBUG order): groups, pose normalisation, and the
landmark transformer of the paper (Eq. 3-7, supplement B), in numpy.

Coordinates are pixels of the model's face crop: x right, y down, z depth.
The normalised frame is the mean landmark's: centred, RMS radius 1, rotation removed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mnt.runtime.errors import RuntimeStageError

N_POINTS = 68


def _r(a: int, b: int) -> tuple[int, ...]:
    return tuple(range(a, b + 1))


# The rasteriser's eight groups (supplement A1), in drawing order:
# name -> (polylines, closed). iBUG numbers the subject's right eye 36-41, left eye 42-47.
GROUPS: dict[str, tuple[tuple[tuple[int, ...], ...], bool]] = {
    "left_eye": ((_r(42, 47),), True),
    "right_eye": ((_r(36, 41),), True),
    "contour": ((_r(0, 16),), False),
    "nose": ((_r(27, 30), _r(31, 35)), False),  # bridge, then the base under the nostrils
    "left_eyebrow": ((_r(22, 26),), False),
    "right_eyebrow": ((_r(17, 21),), False),
    "inner_mouth": ((_r(60, 67),), True),
    "outer_mouth": ((_r(48, 59),), True),
}

# Expression PCA groups (supplement B: "left eye, right eye, eyebrows, mouth, and any
# other" with 8, 8, 8, 16, 8 components = 48).
EXPRESSION_GROUPS: dict[str, tuple[tuple[int, ...], int]] = {
    "left_eye": (_r(42, 47), 8),
    "right_eye": (_r(36, 41), 8),
    "eyebrows": (_r(17, 26), 8),
    "mouth": (_r(48, 67), 16),
    "other": (_r(0, 16) + _r(27, 35), 8),
}
N_EXPRESSION = sum(n for _, n in EXPRESSION_GROUPS.values())


def _check_landmarks(points: np.ndarray, what: str) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.shape[-2:] != (N_POINTS, 3):
        raise RuntimeStageError(f"{what}: expected landmarks of shape (..., 68, 3), got {points.shape}")
    if not np.all(np.isfinite(points)):
        raise RuntimeStageError(f"{what}: landmarks contain NaN or infinity")
    return points


STATS_BOUND = 1e3


@dataclass(frozen=True)
class LandmarkStats:
    """Landmark statistics from training data, shipped with every checkpoint and artefact.

    mean: (68, 3) mean normalised landmark l̄m. basis: (48, 204) expression bases b_exp
    (rows over flattened points, zero outside their group). coef_mean/coef_std: (48,)
    per-coefficient normalisation to N(0, 1). lambda_exp: expression intensity.
    """

    mean: np.ndarray
    basis: np.ndarray
    coef_mean: np.ndarray
    coef_std: np.ndarray
    lambda_exp: float = 1.5

    def __post_init__(self) -> None:
        expected = {
            "mean": (N_POINTS, 3),
            "basis": (N_EXPRESSION, N_POINTS * 3),
            "coef_mean": (N_EXPRESSION,),
            "coef_std": (N_EXPRESSION,),
        }
        for name, shape in expected.items():
            value = getattr(self, name)
            if np.shape(value) != shape:
                raise RuntimeStageError(
                    f"landmark statistics: '{name}' has shape {np.shape(value)}, expected {shape}"
                )
        for name in (*expected, "lambda_exp"):
            kind = np.asarray(getattr(self, name)).dtype
            # strings of numbers would pass the conversion below and stay strings (fuzzed)
            if kind.kind not in "iuf":
                raise RuntimeStageError(f"landmark statistics: '{name}' holds {kind}, not real numbers")
            values = np.asarray(getattr(self, name), dtype=np.float64)
            if not np.all(np.isfinite(values)):
                raise RuntimeStageError(f"landmark statistics: '{name}' holds NaN or infinite values")
            # in the normalised frame (RMS size 1) every statistic is about 1: far beyond is
            # a damaged file, which would overflow into NaN far from its cause
            if not np.all(np.abs(values) <= STATS_BOUND):
                raise RuntimeStageError(f"landmark statistics: '{name}' holds values beyond "
                                        f"±{STATS_BOUND:g} (normalised landmarks are about 1)")
        if not np.all(np.asarray(self.coef_std) > 0):
            raise RuntimeStageError("landmark statistics: 'coef_std' must be positive")
        # a mean face collapsed to a point or a line would be blamed on every driver's face
        if not np.all(np.std(np.asarray(self.mean, dtype=np.float64)[:, :2], axis=0) > 0):
            raise RuntimeStageError("landmark statistics: 'mean' has no spread in x or y")

    def expression(self, alpha: np.ndarray) -> np.ndarray:
        """l̂_exp = λexp · b_expᵀ α for normalised coefficients alpha (..., 48) -> (..., 68, 3)."""
        raw = np.asarray(alpha, np.float64) * self.coef_std + self.coef_mean
        flat = self.lambda_exp * raw @ np.asarray(self.basis, np.float64)
        return flat.reshape(*flat.shape[:-1], N_POINTS, 3)


@dataclass(frozen=True)
class Pose:
    """What normalisation removed: denormalised = scale · normalised @ rotation + translation."""

    rotation: np.ndarray  # (3, 3), det +1
    scale: float
    translation: np.ndarray  # (3,)


def _rms(points: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum(points * points, axis=-1))))


def normalize(landmarks: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, Pose]:
    """Remove translation, scale and 3D rotation: centre, scale to RMS radius 1, and
    rotate onto the mean landmark (Kabsch, proper rotation only)."""
    points = _check_landmarks(landmarks, "normalize")
    translation = points.mean(axis=0)
    centred = points - translation
    scale = _rms(centred)
    if scale < 1e-9:
        raise RuntimeStageError("normalize: all 68 landmarks coincide")
    unit = centred / scale
    u, _, vt = np.linalg.svd(unit.T @ np.asarray(mean, np.float64))
    d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    rotation = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return unit @ rotation.T, Pose(rotation=rotation, scale=scale, translation=translation)


def denormalize(normalized: np.ndarray, pose: Pose) -> np.ndarray:
    """Inverse of :func:`normalize` for the pose it returned."""
    return pose.scale * np.asarray(normalized, np.float64) @ pose.rotation + pose.translation


# (images (N, 3, H, W) float32 in [-1, 1], offsets l̄ - l̄m (N, 204) float32) -> alpha (N, 48)
CoefficientPredictor = Callable[[np.ndarray, np.ndarray], np.ndarray]


class LandmarkTransformer:
    """Eq. 6-7: targets give an identity geometry once; each driver frame gives an
    expression that is put on that identity and posed like the driver."""

    def __init__(self, stats: LandmarkStats, predict: CoefficientPredictor) -> None:
        self.stats = stats
        self.predict = predict

    def _normalized_expression(
        self, images: np.ndarray, landmarks: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, list[Pose]]:
        mean = np.asarray(self.stats.mean, np.float64)
        normed, poses = zip(*(normalize(points, mean) for points in landmarks), strict=True)
        norm = np.stack(normed)
        offsets = (norm - mean).reshape(len(norm), -1).astype(np.float32)
        alpha = self.predict(np.asarray(images, np.float32), offsets)
        return norm, self.stats.expression(alpha), list(poses)

    def target_identity(self, images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """l̂_id(c_y) averaged over the K targets: (K, 3, H, W), (K, 68, 3) -> (68, 3)."""
        landmarks = _check_landmarks(landmarks, "target landmarks").reshape(-1, N_POINTS, 3)
        norm, expression, _ = self._normalized_expression(images, landmarks)
        return (norm - np.asarray(self.stats.mean) - expression).mean(axis=0)

    def drive(self, identity: np.ndarray, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """l̂(c_x -> c_y, t_x), denormalised to the driver's pose: (68, 3)."""
        landmarks = _check_landmarks(landmarks, "driver landmarks")
        _, expression, poses = self._normalized_expression(image[None], landmarks[None])
        return denormalize(np.asarray(self.stats.mean) + identity + expression[0], poses[0])
