"""The geometry around the face networks (numpy and OpenCV only)."""

import math

import numpy as np

from mnt.runtime.landmarkers import blazeface as bf


def test_anchors_follow_the_detector_output_order():
    anchors = bf.ANCHORS
    assert anchors.shape == (896, 2)
    # 16x16 cells with 2 anchors each, then 8x8 cells with 6 (three layers of stride 16)
    assert np.allclose(anchors[0], anchors[1]) and np.allclose(anchors[0], [0.5 / 16, 0.5 / 16])
    assert np.allclose(anchors[2], [1.5 / 16, 0.5 / 16])
    assert np.allclose(anchors[512:518], [0.5 / 8, 0.5 / 8]) and np.allclose(anchors[518], [1.5 / 8, 0.5 / 8])
    assert np.allclose(anchors[-1], [7.5 / 8, 7.5 / 8])


def _detection(score, box):
    box = np.asarray(box, dtype=float)
    return bf.Detection(score, box, np.tile(box[:2], (6, 1)))


def test_weighted_nms_merges_overlaps_by_score_and_keeps_the_rest():
    a, b = _detection(0.9, [0, 0, 10, 10]), _detection(0.6, [1, 1, 11, 11])
    far = _detection(0.7, [50, 50, 60, 60])
    kept = bf.weighted_nms([b, far, a])
    assert [k.score for k in kept] == [0.9, 0.7]
    assert np.allclose(kept[0].box, (0.9 * a.box + 0.6 * b.box) / 1.5)
    assert np.allclose(kept[1].box, far.box)


def test_roi_is_level_with_the_eyes_and_one_and_a_half_times_the_box():
    eyes = np.array([[40.0, 50.0], [60.0, 50.0 + 20 * math.tan(0.2)]])  # left eye lower: turned clockwise
    d = bf.Detection(0.9, np.array([30.0, 30.0, 70.0, 90.0]), np.vstack([eyes, np.zeros((4, 2))]))
    roi = bf.roi_from_detection(d)
    assert math.isclose(roi.rotation, 0.2, abs_tol=1e-12)
    assert (roi.cx, roi.cy, roi.size) == (50.0, 60.0, 90.0)


def test_crop_and_projection_are_inverse():
    """A bright dot drawn in the image lands where `project` says the crop holds it."""
    image = np.zeros((300, 400, 3), np.uint8)
    dot = np.array([230.0, 140.0])
    image[int(dot[1]) - 1:int(dot[1]) + 2, int(dot[0]) - 1:int(dot[0]) + 2] = 255
    roi = bf.Roi(200.0, 150.0, 120.0, 0.4)
    crop = bf.mesh_input(image, roi)[0, ..., 0].astype(np.float64)
    v, u = np.mgrid[:192, :192]
    points = np.zeros((468, 3))
    points[0, :2] = ((crop * u).sum() / crop.sum(), (crop * v).sum() / crop.sum())  # the dot's centroid
    back = bf.project(points.reshape(1, -1), roi)[0, :2]
    assert np.linalg.norm(back - dot) < 0.1  # OpenCV's pixel centres on both sides: no half-pixel shift


def test_letterbox_undoes_into_image_pixels():
    x, roi = bf.detector_input(np.full((100, 200, 3), 255, np.uint8))
    assert x.shape == (1, 128, 128, 3) and x[0, 0, 0, 0] == -1.0 and x[0, 64, 64, 0] == 1.0
    raw = np.zeros((1, 896, 16))
    raw[0, 0, 2:4] = 16.0  # a box of 16 px of the 128 px input around the first anchor
    logits = np.full((1, 896, 1), -50.0)
    logits[0, 0] = 5.0
    (found,) = bf.decode(raw, logits, roi)
    scale = 200 / 128
    centre = (bf.ANCHORS[0] - 0.5) * 200 + [100, 50]
    assert np.allclose(found.box, [*(centre - 8 * scale), *(centre + 8 * scale)])
    assert math.isclose(found.score, 1 / (1 + math.exp(-5.0)))
