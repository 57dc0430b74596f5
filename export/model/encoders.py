"""Target encoder E_y (U-Net with target pose normalisation) and driver encoder E_x."""

from __future__ import annotations

import torch
from torch import nn

from mnt.export.model.blocks import FlowHead, ResBlockDown, ResBlockUp, conv, warp
from mnt.export.model.config import DRIVER_DOWN_BLOCKS, TARGET_DOWN_BLOCKS, ModelConfig


class TargetEncoder(nn.Module):
    """E_y(y, r_y): image and landmark image (6 channels) -> z_y = s5, the flow f_y at
    half resolution, and Ŝ = s1..s4 each warped by f_y pooled to its size (Eq. 8).
    No normalisation layers (supplement A1)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config.channels
        self.project = conv(6, c(0))
        self.down = nn.ModuleList(
            ResBlockDown(c(i), c(i + 1), normalize=False) for i in range(TARGET_DOWN_BLOCKS)
        )
        # Up path from s5 back to s1's resolution (h/2); block j emits c(j) channels and
        # is followed by the skip s_j, so the next block sees 2*c(j).
        ups = []
        cin = c(TARGET_DOWN_BLOCKS)
        for j in range(TARGET_DOWN_BLOCKS - 1, 0, -1):
            ups.append(ResBlockUp(cin, c(j), normalize=False))
            cin = 2 * c(j)
        self.up = nn.ModuleList(ups)
        self.flow = FlowHead(cin, 3, config.flow_init_std)

    def forward(
        self, image: torch.Tensor, landmarks: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(N, 3, H, W) x2 -> z_y (N, c5, H/32, W/32), [ŝ1..ŝ4], f_y (N, 2, H/2, W/2)."""
        h = self.project(torch.cat([image, landmarks], dim=1))
        skips = []
        for block in self.down:
            h = block(h)
            skips.append(h)
        zy, s = skips[-1], skips[:-1]
        u = zy
        for block, skip in zip(self.up, reversed(s), strict=True):
            u = torch.cat([block(u), skip], dim=1)
        flow = self.flow(u)
        return zy, [warp(sj, flow) for sj in s], flow


class DriverEncoder(nn.Module):
    """E_x(r_x): landmark image -> z_x (N, c4, H/16, W/16), instance-normalised blocks."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config.channels
        self.project = conv(3, c(0))
        self.down = nn.Sequential(
            *(ResBlockDown(c(i), c(i + 1), normalize=True) for i in range(DRIVER_DOWN_BLOCKS))
        )

    def forward(self, landmarks: torch.Tensor) -> torch.Tensor:
        return self.down(self.project(landmarks))
