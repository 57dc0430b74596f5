"""The PyTorch reference MarioNETte (export side only: imports torch)."""

from mnt.export.model.blocks import fold_spectral_norm, warp
from mnt.export.model.config import PRESETS, BackboneConfig, ModelConfig
from mnt.export.model.disentangler import LandmarkDisentangler
from mnt.export.model.marionette import MarioNETte, TargetState

__all__ = [
    "PRESETS",
    "BackboneConfig",
    "LandmarkDisentangler",
    "MarioNETte",
    "ModelConfig",
    "TargetState",
    "fold_spectral_norm",
    "warp",
]
