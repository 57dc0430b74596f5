"""Decoder Q(zxy, Ŝ): four warp-alignment blocks (paper, Fig. 4, step 2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mnt.export.model.blocks import FlowHead, InstanceNorm, ResBlockUp, conv, warp
from mnt.export.model.config import DRIVER_DOWN_BLOCKS, ModelConfig


class WarpAlignment(nn.Module):
    """Driver pose adaptation: a 1x1 conv on the decoder state u gives the flow f_u, the
    K-averaged target map ŝ_j is warped by it, concatenated to u, and upsampled."""

    def __init__(self, state_channels: int, map_channels: int, out_channels: int,
                 flow_init_std: float) -> None:
        super().__init__()
        self.flow = FlowHead(state_channels, 1, flow_init_std)
        self.up = ResBlockUp(state_channels + map_channels, out_channels, normalize=True)

    def forward(self, u: torch.Tensor, warped_mean: torch.Tensor) -> torch.Tensor:
        return self.up(torch.cat([u, warp(warped_mean, self.flow(u))], dim=1))


class Decoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config.channels
        # Block j (j = 4..1) sees u with c(j) channels at ŝ_j's resolution, emits c(j-1).
        self.blocks = nn.ModuleList(
            WarpAlignment(c(j), c(j), c(j - 1), config.flow_init_std)
            for j in range(DRIVER_DOWN_BLOCKS, 0, -1)
        )
        self.norm = InstanceNorm(c(0))
        self.out = conv(c(0), 3)

    def forward(self, zxy: torch.Tensor, warped_means: list[torch.Tensor]) -> torch.Tensor:
        """zxy (B, c4, H/16, W/16), [ŝ1..ŝ4] averaged over K -> image (B, 3, H, W) in [-1, 1]."""
        u = zxy
        for block, warped in zip(self.blocks, reversed(warped_means), strict=True):
            u = block(u, warped)
        return torch.tanh(self.out(F.relu(self.norm(u))))
