"""mnt.runtime: the lean runtime (numpy, OpenCV, ONNX Runtime / TensorRT).

Never imports torch, mnt.export or mnt.calibration, so it embeds in applications
on a Jetson or an RTX PC without PyTorch.
"""

from mnt.runtime.errors import MntError, RuntimeStageError
from mnt.runtime.landmarks import (
    GROUPS,
    LandmarkStats,
    Pose,
    denormalize,
    normalize,
)
from mnt.runtime.rasterize import rasterize, to_model_input

__all__ = [
    "GROUPS",
    "LandmarkStats",
    "MntError",
    "Pose",
    "RuntimeStageError",
    "denormalize",
    "normalize",
    "rasterize",
    "to_model_input",
]
