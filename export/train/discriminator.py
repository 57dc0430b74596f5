"""The projection discriminator D(x, r, c) of supplement A1: the image and its landmark
image projected to the base width, five BigGAN residual down blocks without
normalisation, and no global sum pool, so that it scores patches (PatchGAN). Spectral
norm on every layer, the identity embedding included (Miyato and Koyama 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from mnt.export.model.blocks import ResBlockDown, conv
from mnt.export.model.config import TARGET_DOWN_BLOCKS, ModelConfig


class Discriminator(nn.Module):
    def __init__(self, config: ModelConfig, identities: int) -> None:
        super().__init__()
        c = config.channels
        self.project = conv(6, c(0))
        self.down = nn.ModuleList(
            ResBlockDown(c(i), c(i + 1), normalize=False) for i in range(TARGET_DOWN_BLOCKS))
        self.score = spectral_norm(nn.Conv2d(c(TARGET_DOWN_BLOCKS), 1, 1))
        self.embed = spectral_norm(nn.Embedding(identities, c(TARGET_DOWN_BLOCKS)))

    def forward(self, image: torch.Tensor, landmarks: torch.Tensor, identity: torch.Tensor
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """-> patch scores (B, 1, H/32, W/32) and the blocks' features (for feature matching)."""
        h = self.project(torch.cat([image, landmarks], dim=1))
        features = []
        for block in self.down:
            h = block(h)
            features.append(h)
        h = F.relu(h)
        projection = (self.embed(identity)[:, :, None, None] * h).sum(dim=1, keepdim=True)
        return self.score(h) + projection, features
