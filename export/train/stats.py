"""Landmark statistics from data (supplement B, Eq. 12-13): the mean normalised landmark
l̄m, per-video identities, and the expression bases b_exp by PCA on each expression group
of l̄exp(c, t) = l̄(c, t) - l̄m - l̄id(c), with the coefficients' mean and spread."""

from __future__ import annotations

import numpy as np

from mnt.export.errors import ExportError
from mnt.export.model.landmark_prior import mean_face
from mnt.runtime.landmarks import EXPRESSION_GROUPS, N_EXPRESSION, N_POINTS, LandmarkStats, normalize

PROCRUSTES_ROUNDS = 4


def _unit(points: np.ndarray) -> np.ndarray:
    centred = points - points.mean(axis=0)
    return centred / np.sqrt(np.mean(np.sum(centred**2, axis=1)))


def normalized_mean(clips: list[np.ndarray]) -> np.ndarray:
    """Generalised Procrustes: the mean of all frames normalised onto the current mean,
    starting from the hand-made mean face, rotated back to its frontal orientation."""
    prior = normalize(mean_face(), mean_face())[0]
    mean = prior
    for _ in range(PROCRUSTES_ROUNDS):
        mean = _unit(np.mean([normalize(p, mean)[0] for clip in clips for p in clip], axis=0))
    return normalize(mean, prior)[0]  # keep x right, y down, z to the camera


def fit_stats(clips: list[np.ndarray], lambda_exp: float = 1.5) -> LandmarkStats:
    """Landmarks of each clip (T_c, 68, 3), one identity per clip -> the statistics."""
    if len(clips) < 2 or min(len(c) for c in clips) < 2:
        raise ExportError("landmark statistics need at least two clips of two frames with a face")
    mean = normalized_mean(clips)
    expressions = []
    for clip in clips:
        norm = np.stack([normalize(p, mean)[0] for p in clip]) - mean
        expressions.append((norm - norm.mean(axis=0)).reshape(len(clip), -1))  # minus l̄id(c)
    expression = np.concatenate(expressions)
    basis = np.zeros((N_EXPRESSION, N_POINTS * 3))
    row = 0
    for indices, count in EXPRESSION_GROUPS.values():
        columns = np.array([3 * i + a for i in indices for a in range(3)])
        _, _, vt = np.linalg.svd(expression[:, columns], full_matrices=False)
        basis[row:row + count, columns] = vt[:count]
        row += count
    raw = expression @ basis.T
    coef_mean, coef_std = raw.mean(axis=0), raw.std(axis=0)
    coef_std = np.maximum(coef_std, 1e-6 * max(float(coef_std.max()), 1e-12))
    return LandmarkStats(mean=mean, basis=basis, coef_mean=coef_mean, coef_std=coef_std,
                         lambda_exp=lambda_exp)


def coefficients(stats: LandmarkStats, landmarks: np.ndarray, identity: np.ndarray) -> np.ndarray:
    """Normalised expression coefficients α of frames (T, 68, 3) of one identity, whose
    l̄id is `identity` (68, 3): the disentangler's regression targets."""
    norm = np.stack([normalize(p, stats.mean)[0] for p in landmarks])
    expression = (norm - stats.mean - identity).reshape(len(norm), -1)
    return (expression @ stats.basis.T - stats.coef_mean) / stats.coef_std


def identity(stats: LandmarkStats, landmarks: np.ndarray) -> np.ndarray:
    """l̄id(c): a clip's mean normalised landmark minus l̄m (Eq. 13)."""
    return np.mean([normalize(p, stats.mean)[0] for p in landmarks], axis=0) - stats.mean
