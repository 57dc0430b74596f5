import numpy as np
import pytest

from mnt.runtime import RuntimeStageError, rasterize, to_model_input
from mnt.runtime.landmarks import GROUPS
from mnt.runtime.rasterize import COLORS
from tests.helpers import placed_landmarks
from tests.tolerances import HUE_RATIO

PAPER_COLOURS = {  # supplement A1, in the order it lists the groups
    "left_eye": "red", "right_eye": "red", "contour": "green", "nose": "blue",
    "left_eyebrow": "yellow", "right_eyebrow": "yellow", "inner_mouth": "cyan",
    "outer_mouth": "cyan",
}
RGB = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
       "yellow": (255, 255, 0), "cyan": (0, 255, 255)}


def test_eight_groups_in_the_papers_colours():
    assert list(GROUPS) == list(PAPER_COLOURS)
    assert {name: COLORS[name] for name in GROUPS} == {n: RGB[c] for n, c in PAPER_COLOURS.items()}
    covered = sorted(i for lines, _ in GROUPS.values() for line in lines for i in line)
    assert sorted(set(covered)) == list(range(68))


def _midpoints(points, name):
    lines, closed = GROUPS[name]
    for line in lines:
        pairs = list(zip(line, line[1:], strict=False)) + ([(line[-1], line[0])] if closed else [])
        for a, b in pairs:
            yield (points[a, :2] + points[b, :2]) / 2


@pytest.mark.parametrize("name", list(GROUPS))
def test_each_group_is_drawn_in_its_colour(name):
    points = placed_landmarks(256)
    image = rasterize(points, 256)
    colour = np.array(COLORS[name], float) / 255
    hits = 0
    for x, y in _midpoints(points, name):
        pixel = image[int(round(y)), int(round(x))].astype(float)
        if pixel.max() < 128:  # the midpoint fell between pixel centres; too faint to judge
            continue
        hits += 1
        assert np.abs(pixel / pixel.max() - colour).max() <= HUE_RATIO, (name, x, y, pixel)
    assert hits >= 1


def test_background_is_black_and_output_deterministic():
    points = placed_landmarks(256)
    image = rasterize(points, 256)
    assert image.dtype == np.uint8 and image.shape == (256, 256, 3)
    assert (image.max(axis=2) == 0).mean() > 0.9  # thin lines on black
    assert rasterize(points.copy(), 256).tobytes() == image.tobytes()


def test_projection_is_orthographic_depth_is_ignored():
    points = placed_landmarks(256)
    moved = points.copy()
    moved[:, 2] += np.linspace(-50, 50, 68)
    assert np.array_equal(rasterize(points), rasterize(moved))


def test_scales_with_size_and_tolerates_points_outside():
    points = placed_landmarks(128)
    assert rasterize(points, 128).shape == (128, 128, 3)
    far = points * 1e6
    assert rasterize(far, 128).shape == (128, 128, 3)


def test_rejects_bad_landmarks():
    with pytest.raises(RuntimeStageError, match="68, 3"):
        rasterize(np.zeros((5, 3)))
    bad = placed_landmarks(256)
    bad[3, 0] = np.nan
    with pytest.raises(RuntimeStageError):
        rasterize(bad)


def test_model_input_range_and_layout():
    image = rasterize(placed_landmarks(256))
    x = to_model_input(image)
    assert x.shape == (3, 256, 256) and x.dtype == np.float32
    assert x.min() == -1.0 and x.max() <= 1.0
    assert np.allclose((x.transpose(1, 2, 0) + 1) * 127.5, image)
