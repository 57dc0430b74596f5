"""Plausible landmark statistics for a random-initialised checkpoint: a hand-made 3D mean
face in iBUG order and random per-group orthonormal expression bases. A trained
checkpoint carries statistics computed from data instead (supplement B)."""

from __future__ import annotations

import numpy as np

from mnt.runtime.landmarks import (
    EXPRESSION_GROUPS,
    N_EXPRESSION,
    N_POINTS,
    LandmarkStats,
    normalize,
)


def _ellipse(cx: float, cy: float, w: float, h: float, angles: np.ndarray) -> np.ndarray:
    """Points on an ellipse; angle 0 is image-right, pi/2 is up (y grows downwards)."""
    return np.stack([cx + 0.5 * w * np.cos(angles), cy - 0.5 * h * np.sin(angles)], axis=1)


def mean_face() -> np.ndarray:
    """A frontal 68-point face, x right, y down, z towards the camera; unit RMS radius."""
    t = np.linspace(0.0, 1.0, 17)
    contour = np.stack([-0.85 * np.cos(np.pi * t), -0.1 + 1.05 * np.sin(np.pi * t)], axis=1)
    s = np.linspace(0.0, 1.0, 5)
    brow_right = np.stack([-0.7 + 0.55 * s, -0.45 - 0.08 * np.sin(np.pi * s)], axis=1)
    brow_left = np.stack([0.15 + 0.55 * s, -0.45 - 0.08 * np.sin(np.pi * s)], axis=1)
    bridge = np.stack([np.zeros(4), np.linspace(-0.3, 0.15, 4)], axis=1)
    base = np.stack([np.linspace(-0.18, 0.18, 5), 0.25 + 0.03 * np.sin(np.pi * s)], axis=1)
    eye_angles = np.pi - np.arange(6) * np.pi / 3
    eye_right = _ellipse(-0.4, -0.25, 0.28, 0.1, eye_angles)
    eye_left = _ellipse(0.4, -0.25, 0.28, 0.1, eye_angles)
    outer_mouth = _ellipse(0.0, 0.55, 0.5, 0.2, np.pi - np.arange(12) * np.pi / 6)
    inner_mouth = _ellipse(0.0, 0.55, 0.35, 0.06, np.pi - np.arange(8) * np.pi / 4)
    xy = np.concatenate([contour, brow_right, brow_left, bridge, base, eye_right, eye_left,
                         outer_mouth, inner_mouth])
    # A rounded face: the sides recede, the nose stands out.
    z = 0.45 * (1.0 - xy[:, 0] ** 2)
    z[27:31] += np.linspace(0.1, 0.35, 4)
    z[31:36] += 0.15
    points = np.concatenate([xy, z[:, None]], axis=1)
    assert points.shape == (N_POINTS, 3)
    centred = points - points.mean(axis=0)
    return centred / np.sqrt(np.mean(np.sum(centred**2, axis=1)))


def random_stats(rng: np.random.Generator, lambda_exp: float = 1.5) -> LandmarkStats:
    """Mean face plus, per expression group, an orthonormal basis over that group's
    coordinates with coefficient spreads decaying like a PCA spectrum."""
    mean, _ = normalize(mean_face(), mean_face())
    basis = np.zeros((N_EXPRESSION, N_POINTS * 3))
    std = np.zeros(N_EXPRESSION)
    row = 0
    for indices, count in EXPRESSION_GROUPS.values():
        columns = np.array([3 * i + a for i in indices for a in range(3)])
        q, _ = np.linalg.qr(rng.standard_normal((len(columns), count)))
        basis[row:row + count, columns] = q.T
        std[row:row + count] = 0.04 * 0.75 ** np.arange(count)
        row += count
    return LandmarkStats(mean=mean, basis=basis, coef_mean=np.zeros(N_EXPRESSION),
                         coef_std=std, lambda_exp=lambda_exp)
