"""Built-in demo inputs, so that `mnt-run --demo` needs nothing the user must find: the
target is the astronaut photo shipped with scikit-image, the driver a short video made
from matplotlib's Grace Hopper photo with a synthetic head sway and a mouth that opens and
closes (the jaw pulled down by a smooth warp, the gap painted dark), so that both pose and
expression reach the model."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.files import atomic_path
from mnt.runtime.video import VideoWriter

FRAMES, RATE, SIZE = 75, Fraction(25), 384
# Grace Hopper's mouth in the 384 px square (measured once with the face mesh): the lips
# meet at (201, 208); the mouth is 54 px wide and the chin is at y = 249.
MOUTH_X, MOUTH_Y, MOUTH_HALF_WIDTH, CHIN_Y = 201.0, 208.0, 27.0, 249.0
MOUTH_OPENINGS, MOUTH_MAX_PX = 4, 14.0


def _smoothstep(lo: float, hi: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def open_mouth(photo: np.ndarray, gap: float) -> np.ndarray:
    """Drop the jaw of the (SIZE x SIZE) photo by `gap` pixels and paint the opening dark."""
    if gap <= 0.5:
        return photo
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    across = np.exp(-(((xs - MOUTH_X) / (1.4 * MOUTH_HALF_WIDTH)) ** 2))
    below = _smoothstep(MOUTH_Y - 3, MOUTH_Y + 4, ys) * (1 - _smoothstep(CHIN_Y, CHIN_Y + 45, ys))
    dropped = cv2.remap(photo, xs, ys - gap * across * below, cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REFLECT)
    mask = np.zeros((SIZE, SIZE), np.float32)
    cv2.ellipse(mask, (round(MOUTH_X), round(MOUTH_Y + gap / 2)),
                (round(0.75 * MOUTH_HALF_WIDTH), max(1, round(gap / 2))), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (5, 5), 0)[..., None]
    inside = np.array([70, 30, 35], np.float32)  # a dark mouth interior
    return (mask * inside + (1 - mask) * dropped).astype(np.uint8)


def _photo(module: str) -> np.ndarray:
    try:
        if module == "skimage":
            from skimage import data

            return data.astronaut()
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
            encoded = np.frombuffer(handle.read(), np.uint8)
        return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    except ImportError as err:
        raise RuntimeStageError(f"the demo needs {module} for its photos",
                                hint="pip install 'mnt[export,faces]'") from err


def demo_targets(folder: Path) -> Path:
    """Write (once) the demo's targets folder, the astronaut photo, under `folder`."""
    targets = folder / "targets"
    if not (targets / "astronaut.png").is_file():
        targets.mkdir(parents=True, exist_ok=True)
        _, png = cv2.imencode(".png", cv2.cvtColor(_photo("skimage"), cv2.COLOR_RGB2BGR))
        with atomic_path(targets / "astronaut.png") as temporary:  # (never half a photo)
            temporary.write_bytes(png.tobytes())
    return targets


def demo_inputs(folder: Path) -> tuple[Path, Path]:
    """Write (once) the demo's driver video and targets folder under `folder`."""
    video, targets = folder / "hopper-talking.mp4", demo_targets(folder)
    if not video.is_file():
        photo = _photo("matplotlib")
        h, w = photo.shape[:2]
        side = min(h, w)
        photo = cv2.resize(photo[:side, (w - side) // 2:(w + side) // 2], (SIZE, SIZE))
        writer = VideoWriter(video, RATE, SIZE, SIZE)
        try:
            for i in range(FRAMES):
                phase = 2 * math.pi * i / FRAMES
                gap = MOUTH_MAX_PX * math.sin(math.pi * MOUTH_OPENINGS * i / FRAMES) ** 2
                m = cv2.getRotationMatrix2D((SIZE / 2, SIZE * 0.45), 10 * math.sin(phase),
                                            1.0 + 0.06 * math.sin(2 * phase))
                m[:, 2] += (12 * math.sin(phase), 6 * math.cos(phase))
                writer.write(cv2.warpAffine(open_mouth(photo, gap), m, (SIZE, SIZE),
                                            borderMode=cv2.BORDER_REFLECT))
        except BaseException:
            writer.abort()
            raise
        writer.close()
    return video, targets
