"""The generator G(r_x; {y_i}, {r_y_i}) cut for deployment.

`encode_targets` is the target phase: everything that does not depend on the driver
(z_y's attention keys and values for every blender block, Ŝ averaged over K).
`generate` is the frame phase: driver encoder, blender queries, decoder.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from mnt.export.model.attention import Blender
from mnt.export.model.config import (
    ATTENTION_BLOCKS,
    DRIVER_DOWN_BLOCKS,
    TARGET_DOWN_BLOCKS,
    ModelConfig,
)
from mnt.export.model.decoder import Decoder
from mnt.export.model.encoders import DriverEncoder, TargetEncoder


class EncodedTargets(NamedTuple):
    """What the frame phase needs from K targets; its size does not grow with K except
    for the keys and values (B, K*h*w, c)."""

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    warped: tuple[torch.Tensor, ...]  # ŝ1..ŝ4 averaged over the K targets


class MarioNETte(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.target_encoder = TargetEncoder(config)
        self.driver_encoder = DriverEncoder(config)
        self.blender = Blender(c(DRIVER_DOWN_BLOCKS), c(TARGET_DOWN_BLOCKS), ATTENTION_BLOCKS)
        self.decoder = Decoder(config)

    def encode_targets(self, images: torch.Tensor, landmarks: torch.Tensor) -> EncodedTargets:
        """Targets y and r_y, each (B, K, 3, H, W) -> EncodedTargets."""
        b, k = images.shape[:2]
        zy, warped, _ = self.target_encoder(images.flatten(0, 1), landmarks.flatten(0, 1))
        keys_values = self.blender.keys_values(zy.unflatten(0, (b, k)))
        return EncodedTargets(
            keys=tuple(kv[0] for kv in keys_values),
            values=tuple(kv[1] for kv in keys_values),
            warped=tuple(s.unflatten(0, (b, k)).mean(dim=1) for s in warped),
        )

    def generate(self, landmarks: torch.Tensor, state: EncodedTargets) -> torch.Tensor:
        """Driver landmark image r_x (B, 3, H, W) -> reenacted image (B, 3, H, W) in [-1, 1]."""
        zx = self.driver_encoder(landmarks)
        zxy = self.blender(zx, list(zip(state.keys, state.values, strict=True)))
        return self.decoder(zxy, list(state.warped))

    def forward(
        self, driver_landmarks: torch.Tensor, target_images: torch.Tensor,
        target_landmarks: torch.Tensor,
    ) -> torch.Tensor:
        return self.generate(driver_landmarks, self.encode_targets(target_images, target_landmarks))
