"""Built-in demo inputs, so that `mnt-run --demo` needs nothing the user must find: the
target is the astronaut photo shipped with scikit-image, the driver a short video made
from matplotlib's Grace Hopper photo with a synthetic head sway (pose only: a photo has no
expressions)."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.video import VideoWriter

FRAMES, RATE, SIZE = 75, Fraction(25), 384


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


def demo_inputs(folder: Path) -> tuple[Path, Path]:
    """Write (once) the demo's driver video and targets folder under `folder`."""
    video, targets = folder / "driver.mp4", folder / "targets"
    if not (targets / "astronaut.png").is_file():
        targets.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(targets / "astronaut.png"), cv2.cvtColor(_photo("skimage"), cv2.COLOR_RGB2BGR))
    if not video.is_file():
        photo = _photo("matplotlib")
        h, w = photo.shape[:2]
        side = min(h, w)
        photo = cv2.resize(photo[:side, (w - side) // 2:(w + side) // 2], (SIZE, SIZE))
        writer = VideoWriter(video, RATE, SIZE, SIZE)
        try:
            for i in range(FRAMES):
                phase = 2 * math.pi * i / FRAMES
                m = cv2.getRotationMatrix2D((SIZE / 2, SIZE * 0.45), 10 * math.sin(phase),
                                            1.0 + 0.06 * math.sin(2 * phase))
                m[:, 2] += (12 * math.sin(phase), 6 * math.cos(phase))
                writer.write(cv2.warpAffine(photo, m, (SIZE, SIZE), borderMode=cv2.BORDER_REFLECT))
        except BaseException:
            writer.abort()
            raise
        writer.close()
    return video, targets
