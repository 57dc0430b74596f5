"""Checks by value of what reaches the model from outside its own computation: landmarks
given to the Python API, and target states read back from the cache folder. Both are
untrusted (a caller's bug, a damaged or stale cache file), and both would otherwise run:
landmarks far off the crop give NaN or a meaningless face, and a cache entry of NaN gives
a black one."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.landmarks import N_POINTS
from mnt.runtime.manifest import TensorInfo

# Landmarks (crop pixels) may lie at most this many crop sizes outside the crop: a head
# that moved half out of a driver's crop is still in range, a caller's unit mistake is not.
MARGIN = 2
IDENTITY_BOUND = 1e3
# |a target feature|: float16's largest, what an FP16 build holds anyway; beyond it a
# float32 model's features are a damaged entry (the generator would give NaN: a black face)
FEED_BOUND = 65504.0  # |l̂_id|, in the normalised frame (RMS size 1): a real face is about 1


def landmark_range(size: int) -> str:
    lo, hi = -MARGIN * size, (1 + MARGIN) * size
    return f"x and y from {lo} to {hi}, z from {lo - size} to {hi} (within {MARGIN} crop sizes of the crop)"


def check_landmarks(points: object, size: int, what: str) -> np.ndarray:
    """(68, 3) finite landmarks in crop pixels, within MARGIN crop sizes of a size x size crop."""
    try:
        array = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise RuntimeStageError(f"{what}: expected (68, 3) numbers in crop pixels, "
                                f"got {type(points).__name__}") from err
    if array.shape != (N_POINTS, 3):
        raise RuntimeStageError(f"{what}: expected landmarks of shape (68, 3), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise RuntimeStageError(f"{what}: landmarks contain NaN or infinity")
    lo, hi = -MARGIN * size, (1 + MARGIN) * size
    if not (np.all((array[:, :2] >= lo) & (array[:, :2] <= hi))
            and np.all((array[:, 2] >= lo - size) & (array[:, 2] <= hi))):
        worst = float(np.max(np.abs(array)))
        raise RuntimeStageError(f"{what}: landmarks reach {worst:.3g} px, outside the range "
                                f"for a {size} px crop: {landmark_range(size)}",
                                hint="give landmarks in the crop's pixels (mnt.runtime.align)")
    return array


def state_problem(feeds: Mapping[str, np.ndarray], identity: np.ndarray, k: int, faces: int,
                  expected: tuple[TensorInfo, ...]) -> str | None:
    """What is wrong with a target state read back from the cache (None if nothing):
    `expected` is the generator's target inputs as the manifest states them."""
    if k != faces:
        return f"made for {k} targets, not {faces}"
    if np.shape(identity) != (N_POINTS, 3) or not np.issubdtype(np.asarray(identity).dtype, np.floating):
        return f"its identity is {np.asarray(identity).dtype} {np.shape(identity)}, expected float (68, 3)"
    if not (np.all(np.isfinite(identity)) and np.all(np.abs(identity) < IDENTITY_BOUND)):
        return "its identity holds NaN, infinite or out-of-range values"
    names = {t.name for t in expected}
    if set(feeds) != names:
        missing, extra = sorted(names - set(feeds)), sorted(set(feeds) - names)
        return f"its tensors differ from the generator's (missing {missing}, unexpected {extra})"
    for t in expected:
        array = feeds[t.name]
        shape = tuple(k if isinstance(d, str) else d for d in t.shape)
        if array.shape != shape or not np.issubdtype(array.dtype, np.floating):
            return f"{t.name} is {array.dtype} {array.shape}, expected float {shape}"
        with np.errstate(over="ignore", invalid="ignore"):
            if not np.all(np.abs(array.astype(np.float64)) <= FEED_BOUND):
                return f"{t.name} holds NaN, infinite or out-of-range values (beyond ±{FEED_BOUND:g})"
    return None
