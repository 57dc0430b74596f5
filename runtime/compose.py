"""What an output frame shows: the reenacted face alone, beside the driver's crop, or
blended back into the first target photo."""

from __future__ import annotations

import numpy as np

from mnt.runtime.align import Crop, fit_within, paste_back

OUTPUTS = ("face", "side-by-side", "paste-back")


def backdrop(photo: np.ndarray, crop: Crop, max_size: int) -> tuple[np.ndarray, Crop]:
    """paste-back's canvas: the first target photo (and its crop) within `max_size` pixels."""
    return fit_within(photo, crop, max_size)


def compose(mode: str, result: np.ndarray, crop: Crop, canvas: tuple[np.ndarray, Crop] | None) -> np.ndarray:
    """`canvas`: `backdrop(...)`, for paste-back only."""
    if mode == "face":
        return result
    if mode == "side-by-side":
        return np.concatenate([crop.image, result], axis=1)
    if canvas is None:
        raise ValueError("paste-back needs the target photo's backdrop")
    return paste_back(canvas[0], result, canvas[1])
