"""Model configuration: plain data, saved inside every checkpoint.

The architecture (five target downsampling blocks, four driver ones, three attention
blocks, four warp-alignment blocks) is fixed by the paper; presets only change widths,
the image size and the disentangler's backbone.
"""

from __future__ import annotations

import json
import math
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

    def __post_init__(self) -> None:
        found = []
        if self.block not in ("bottleneck", "basic"):
            found.append(f"backbone.block is {self.block!r}, expected 'bottleneck' or 'basic'")
        if not isinstance(self.layers, tuple) or not 1 <= len(self.layers) <= 6:
            found.append(f"backbone.layers is {self.layers!r}, expected a list of 1 to 6 block counts")
        else:
            found += [p for i, n in enumerate(self.layers)
                      if (p := _field_problem(f"backbone.layers[{i}]", n, int, (1, 64)))]
        if problem := _field_problem("backbone.width", self.width, int, (1, 1024)):
            found.append(problem)
        if found:
            raise ValueError("; ".join(found))

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
        # A checkpoint's config is untrusted input: every field is checked here, by value,
        # before a layer is built from it (torch and OpenCV would fail later, unclearly).
        found = [problem for name, kind, allowed in _FIELDS
                 if (problem := _field_problem(name, getattr(self, name), kind, allowed))]
        if not found and self.max_channels < self.base_channels:
            found.append(f"max_channels is {self.max_channels}, expected at least base_channels "
                         f"({self.base_channels})")
        if not isinstance(self.backbone, BackboneConfig):
            found.append(f"backbone is {type(self.backbone).__name__}, expected an object")
        if found:
            raise ValueError("; ".join(found))

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
            backbone = values["backbone"]
            if not isinstance(backbone, dict):
                raise ValueError(f"backbone is {type(backbone).__name__}, expected an object")
            unknown = sorted(set(backbone) - {f.name for f in fields(BackboneConfig)})
            if unknown:
                raise ValueError(f"unknown backbone fields {unknown}")
            layers = backbone.get("layers", BackboneConfig.layers)
            values["backbone"] = BackboneConfig(**{
                **backbone, "layers": tuple(layers) if isinstance(layers, list | tuple) else layers})
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))


# Each field: (name, type, (lowest, highest)); image_size is also a multiple of 2**5 (the
# target encoder's five downsamplings), base_channels of 4 (the attention's heads).
_FIELDS: tuple[tuple[str, type, tuple[float, float]], ...] = (
    ("image_size", int, (32, 2048)),
    ("base_channels", int, (4, 1024)),
    ("max_channels", int, (4, 4096)),
    ("disentangler_hidden", int, (1, 4096)),
    ("flow_init_std", float, (0.0, 1.0)),
)
_MULTIPLES = {"image_size": 2**TARGET_DOWN_BLOCKS, "base_channels": 4}


def _field_problem(name: str, value: Any, kind: type, allowed: tuple[float, float]) -> str | None:
    """What is wrong with one field's value (None if nothing): its type, range and step."""
    lo, hi = allowed
    multiple = _MULTIPLES.get(name)
    expected = (f"an integer from {lo} to {hi}" + (f", a multiple of {multiple}" if multiple else "")
                if kind is int else f"a finite number from {lo} to {hi}")
    ok_type = isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        ok_type = (ok_type or isinstance(value, float)) and math.isfinite(float(min(value, 2.0)))
    if not ok_type or not lo <= value <= hi or (multiple and value % multiple):
        shown = repr(value)
        return f"{name} is {shown[:40] + '...' if len(shown) > 40 else shown}, expected {expected}"
    return None


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
