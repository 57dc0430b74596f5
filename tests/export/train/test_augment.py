"""Mirrored training samples: the 68 points' left-right counterparts, the rasteriser's
picture of mirrored points against the mirrored picture, real landmarks of a flipped face,
and a mirrored sample made whole."""

from __future__ import annotations

import numpy as np
import pytest

from mnt.export.train.dataset import MIRROR, mirror
from mnt.runtime.landmarks import GROUPS
from mnt.runtime.rasterize import rasterize
from tests.helpers import placed_landmarks, real_faces


def test_mirroring_swaps_each_side_s_points_and_undoes_itself():
    assert sorted(MIRROR) == list(range(68)) and np.all(MIRROR[MIRROR] == np.arange(68))
    assert {int(MIRROR[i]) for i in range(36, 42)} == set(range(42, 48))  # eyes swap
    assert {int(MIRROR[i]) for i in range(17, 22)} == set(range(22, 27))  # eyebrows swap
    assert [int(MIRROR[i]) for i in (8, 27, 30, 33, 51, 57, 62, 66)] == [8, 27, 30, 33, 51, 57, 62, 66]
    points = placed_landmarks(128)
    np.testing.assert_allclose(mirror(mirror(points, 128), 128), points)
    flipped = mirror(points, 128)
    # The mirrored face's left eye is the original's right eye, reflected.
    np.testing.assert_allclose(flipped[list(GROUPS["left_eye"][0][0]), 0].mean(),
                               127 - points[list(GROUPS["right_eye"][0][0]), 0].mean())


def test_mirrored_points_draw_the_mirrored_landmark_image():
    for seed in range(3):
        points = placed_landmarks(128, seed=seed, yaw=0.3 * (seed - 1))
        drawn, flipped = rasterize(mirror(points, 128), 128), rasterize(points, 128)[:, ::-1]
        # Same pixels up to anti-aliasing phase: no line moved, no group changed colour.
        assert np.abs(drawn.astype(int) - flipped.astype(int)).mean() < 1.0
        assert (drawn > 0).sum() == pytest.approx((flipped > 0).sum(), rel=0.05)


def test_a_flipped_real_face_has_the_mirrored_landmarks():
    pytest.importorskip("mediapipe")
    from mnt.runtime.landmarkers.mediapipe_mesh import MediaPipeLandmarks

    with MediaPipeLandmarks() as faces:
        for image in real_faces(256)[:3]:
            face, flipped = faces.detect(image), faces.detect(np.ascontiguousarray(image[:, ::-1]))
            assert face is not None and flipped is not None
            error = np.linalg.norm(mirror(face.landmarks, 256)[:, :2] - flipped.landmarks[:, :2], axis=1)
            assert np.median(error) < 3.0, error  # px of 256 (measured 0.3-1.8 per group)
            reflected = face.landmarks[:, :2] * [-1, 1] + [255, 0]  # x reflected, sides not swapped
            assert np.median(np.linalg.norm(reflected - flipped.landmarks[:, :2], axis=1)) > 10
