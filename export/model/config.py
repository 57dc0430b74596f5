"""Model configuration: plain data, saved inside every checkpoint.

The architecture (five target downsampling blocks, four driver ones, three attention
blocks, four warp-alignment blocks) is fixed by the paper; presets only change widths,
the image size and the disentangler's backbone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

TARGET_DOWN_BLOCKS = 5
DRIVER_DOWN_BLOCKS = 4
ATTENTION_BLOCKS = 3


@dataclass(frozen=True)
class BackboneConfig:
    """ResNet feature extractor of the landmark disentangler."""

    block: str = "bottleneck"  # "bottleneck" (ResNet-50 style) or "basic" (ResNet-18 style)
    layers: tuple[int, ...] = (3, 4, 6, 3)
    width: int = 64  # channels of the stem; stage i has width * 2**i (* 4 for bottleneck)

    @property
    def out_channels(self) -> int:
        expansion = 4 if self.block == "bottleneck" else 1
        return self.width * 2 ** (len(self.layers) - 1) * expansion


@dataclass(frozen=True)
class ModelConfig:
    image_size: int = 256
    base_channels: int = 64  # after the input projection
    max_channels: int = 512
    disentangler_hidden: int = 256
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    # Std of the flow heads' initial weights: flows start small but non-zero, so that
    # the warps are exercised by a random model without amplifying rounding.
    flow_init_std: float = 1e-3

    def __post_init__(self) -> None:
        divisor = 2**TARGET_DOWN_BLOCKS
        if self.image_size % divisor:
            raise ValueError(f"image_size must be a multiple of {divisor}, got {self.image_size}")
        if self.base_channels % 4 or self.max_channels < self.base_channels:
            raise ValueError("base_channels must be a multiple of 4 and at most max_channels")
        if self.backbone.block not in ("bottleneck", "basic"):
            raise ValueError(f"unknown backbone block {self.backbone.block!r}")

    def channels(self, level: int) -> int:
        """Channels after `level` downsamplings: doubling from base_channels, capped."""
        return min(self.base_channels * 2**level, self.max_channels)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config fields {unknown}")
        values = dict(data)
        if "backbone" in values:
            backbone = dict(values["backbone"])
            backbone["layers"] = tuple(backbone.get("layers", BackboneConfig.layers))
            values["backbone"] = BackboneConfig(**backbone)
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))


PRESETS: dict[str, ModelConfig] = {
    # The paper: 256x256, 64 -> 512 channels, ResNet-50 disentangler.
    "paper": ModelConfig(),
    # Same structure at a quarter of the widths, for fast CPU work and CI.
    "tiny": ModelConfig(
        base_channels=16,
        max_channels=128,
        disentangler_hidden=64,
        backbone=BackboneConfig(block="basic", layers=(1, 1, 1, 1), width=16),
    ),
    # tiny's widths at 128x128: the built-in demo model, trainable on a CPU (export/pretrained).
    "small": ModelConfig(
        image_size=128,
        base_channels=16,
        max_channels=128,
        disentangler_hidden=64,
        backbone=BackboneConfig(block="basic", layers=(1, 1, 1, 1), width=16),
    ),
}
